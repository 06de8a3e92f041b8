"""Bounces and complaints in the console, in headless Chromium: the campaign page's table
shows what the delivery rows hold and the warning of a campaign that paused itself; the
list marks it. Checked with axe-core and photographed narrow and wide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.settings import Settings
from tests.browser.test_console import check_page
from tests.support.console import PASSWORD, make_staff, serve_console
from tests.unit.dispatcher.console.test_feedback import feedback_campaigns, from_rows

pytestmark = pytest.mark.browser


def test_staff_see_bounce_and_complaint_rates_and_why_a_campaign_paused(
    browser: Any, settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = settings.replace(pause_min_sent=20)
    hit, quiet = feedback_campaigns(settings, session_factory)
    rows = from_rows(session_factory, hit)
    sent = sum(rows.values())
    make_staff(settings, session_factory, "v@staff.example", "viewer")
    with serve_console(settings) as console:
        page = browser.new_page()
        try:
            page.goto(f"{console}/campaigns")
            page.get_by_label("E-mail address").fill("v@staff.example")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("h1:has-text('Campaigns')")

            marker = page.locator(f'[data-over="{hit}"]')
            assert marker.inner_text().startswith("! paused for its rates; complaint rate over")
            assert page.locator(f'[data-over="{quiet}"]').count() == 0
            check_page(page, tmp_path, "feedback-01-campaigns")

            page.locator(f'a[href="/campaigns/{hit}"]').click()
            page.wait_for_selector("#feedback")
            alert = page.get_by_role("alert").filter(has_text="Paused for its bounces")
            assert "This campaign paused itself: hard-bounce rate 7.50%" in alert.inner_text()
            table = page.locator("#feedback")
            for kind in ("hard_bounce", "soft_bounce", "complaint"):
                row = table.locator(f'tr[data-kind="{kind}"]')
                assert row.locator("[data-count]").inner_text() == str(rows[kind])
                rate = row.locator("[data-rate]").inner_text()
                assert rate.startswith(f"{100 * rows[kind] / sent:.2f}\xa0%")
            check_page(page, tmp_path, "feedback-02-campaign")
        finally:
            page.close()
