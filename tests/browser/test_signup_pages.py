"""A person signs up, confirms from the mail, and asks for their preferences link, in Chromium.

Screenshots of every page, narrow (390 px) and wide (1280 px), go to the test's tmp dir, or
to ``$SIGNUP_SCREENSHOTS`` when set (to look at them).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.settings import Settings
from suppression.consent import current_consent
from suppression.models import ConsentStatus, Scope
from suppression.registry import find_address
from tests.factories import make_contact
from tests.support.smtp_sink import SmtpSink
from tests.support.web_server import free_port, serve

pytestmark = pytest.mark.browser

WIDTHS = {"narrow": 390, "wide": 1280}


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SIGNUP_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def snap(page: Any, folder: Path, name: str) -> None:
    """Screenshot the page as it is, at both widths (full page)."""
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 800})
        page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
        assert (folder / f"{name}-{label}.png").stat().st_size > 0
    page.set_viewport_size({"width": 1280, "height": 800})


def watched(browser: Any) -> tuple[Any, list[str]]:
    """A page whose console errors (a CSP violation is one), failed and 4xx/5xx loads of
    anything but the page itself are collected."""
    page = browser.new_page()
    errors: list[str] = []
    # A page answered 400/429 on purpose is logged as a failed load; loads of anything else
    # that fail are caught below, by resource type.
    expected = "Failed to load resource: the server responded with a status of"
    page.on(
        "console",
        lambda m: (
            errors.append(m.text) if m.type == "error" and not m.text.startswith(expected) else None
        ),
    )
    page.on("requestfailed", lambda r: errors.append(r.url))
    page.on(
        "response",
        lambda r: (
            errors.append(r.url)
            if r.status >= 400 and r.request.resource_type != "document"
            else None
        ),
    )
    return page, errors


def link_in(sink: SmtpSink, recipient: str, path: str) -> str:
    sink.wait_until(
        lambda got: any(recipient in m.recipients for m in got), 60, what=f"mail to {recipient}"
    )
    message = next(m.message for m in sink.received() if recipient in m.recipients)
    assert message["List-Unsubscribe"] is None
    html = message.get_body(("html",)).get_content()
    found = re.search(rf'href="(http[^"]+/{path}/[^"]+)"', html)
    assert found, f"no /{path}/ link in the mail"
    return found.group(1)


def marketing(sessions: sessionmaker[Session], address: str) -> str | None:
    with session_scope(sessions) as session:
        row = find_address(session, address)
        if row is None:
            return None
        state = current_consent(session, row.id, Scope.MARKETING)
        return state.status if state else None


def test_sign_up_confirm_from_the_mail_then_preferences(
    browser: Any, settings: Settings, session_factory, smtp_sink: SmtpSink, shots: Path
) -> None:
    port = free_port()
    local = settings.replace(base_url=f"http://127.0.0.1:{port}", mail_url=smtp_sink.url)
    with serve(local, port) as base:
        page, errors = watched(browser)
        page.goto(f"{base}/subscribe")
        assert page.locator("h1").inner_text() == "Subscribe to Killer Tracks e-mail"
        header = page.locator("header").evaluate("e => getComputedStyle(e).backgroundColor")
        assert header == "rgb(17, 17, 17)", "the site stylesheet did not load"
        assert not page.get_by_label(local.signup_marketing_text).is_checked()
        assert not page.get_by_label(local.signup_affiliates_text).is_checked()
        assert not page.locator("#comment").is_visible() or page.locator(".hp").evaluate(
            "e => e.getBoundingClientRect().right < 0"
        ), "the honeypot field shows"
        snap(page, shots, "1-subscribe")

        # Nothing ticked: told what to do, nothing sent.
        page.get_by_label("E-mail address", exact=True).fill("Zoe.Person@example.com")
        page.get_by_label("First name").fill("Zoë")
        page.get_by_role("button", name="Subscribe").click()
        page.wait_for_selector("#error")
        assert "Tick at least one box" in page.locator("#error").inner_text()
        assert (
            page.get_by_label("E-mail address", exact=True).input_value()
            == "Zoe.Person@example.com"
        )
        snap(page, shots, "2-subscribe-error")

        page.get_by_label(local.signup_marketing_text).check()
        page.get_by_role("button", name="Subscribe").click()
        page.wait_for_selector("text=Check your inbox")
        snap(page, shots, "3-check-inbox")
        assert marketing(session_factory, "zoe.person@example.com") is None

        url = link_in(smtp_sink, "zoe.person@example.com", "subscribe/confirm")
        page.goto(url)
        assert page.locator("h1").inner_text() == "Confirm your subscription"
        assert "z***@e***.com" in page.content()
        snap(page, shots, "4-confirm")
        assert marketing(session_factory, "zoe.person@example.com") is None  # opening: nothing

        page.get_by_role("button", name="Confirm my subscription").click()
        page.wait_for_selector("text=your subscription is confirmed")
        snap(page, shots, "5-subscribed")
        assert marketing(session_factory, "zoe.person@example.com") == ConsentStatus.OPTED_IN

        page.get_by_role("link", name="your e-mail preferences page").click()
        page.wait_for_selector("text=Your e-mail preferences")
        assert page.get_by_label("Yes, send me news about music and products").is_checked()

        page.goto(url[:-5] + "AAAAA")
        assert page.locator("h1").inner_text() == "This confirmation link is not valid"
        snap(page, shots, "6-confirm-invalid")
        page.close()
    assert errors == []


def test_ask_for_the_preferences_link_and_follow_it(
    browser: Any, settings: Settings, session_factory, smtp_sink: SmtpSink, shots: Path
) -> None:
    port = free_port()
    local = settings.replace(
        base_url=f"http://127.0.0.1:{port}", mail_url=smtp_sink.url, signup_ip_limit=2
    )
    with session_scope(session_factory) as session:
        make_contact(session, "ann@example.com", first_name="Ann")
    with serve(local, port) as base:
        page, errors = watched(browser)
        page.goto(f"{base}/subscribe")
        page.get_by_role("link", name="Send me my preferences link").click()
        page.wait_for_selector("h1:text('Send me my preferences link')")
        snap(page, shots, "7-preferences-link")
        page.get_by_label("E-mail address", exact=True).fill("ANN@example.com")
        page.get_by_role("button", name="Send me the link").click()
        page.wait_for_selector("text=If this address belongs to one of our contacts")
        snap(page, shots, "8-preferences-link-sent")

        url = link_in(smtp_sink, "ann@example.com", "preferences")
        page.goto(url)
        assert page.locator("h1").inner_text() == "Your e-mail preferences"
        assert "a***@e***.com" in page.content()

        # An address we do not know gets the same page, and no mail.
        page.goto(f"{base}/preferences-link")
        page.get_by_label("E-mail address", exact=True).fill("stranger@example.com")
        page.get_by_role("button", name="Send me the link").click()
        page.wait_for_selector("text=If this address belongs to one of our contacts")

        # Over the per-IP limit (2 in this test): told plainly, nothing sent.
        page.goto(f"{base}/preferences-link")
        page.get_by_label("E-mail address", exact=True).fill("ann@example.com")
        page.get_by_role("button", name="Send me the link").click()
        page.wait_for_selector("text=Too many requests")
        snap(page, shots, "9-too-many")
        page.close()
    assert [r.recipients for r in smtp_sink.received()] == [["ann@example.com"]]
    assert errors == []
