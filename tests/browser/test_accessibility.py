"""Every recipient page, in Chromium at a phone's width and a desktop's, has no violation
axe-core (the accessibility engine) finds, and is saved as a screenshot to look at."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dispatcher.db import session_scope
from dispatcher.settings import Settings
from suppression.models import Reason
from suppression.suppressions import add_suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.factories import make_contact
from tests.support.web_server import serve

pytestmark = pytest.mark.browser

WIDTHS = {"narrow": 390, "wide": 1280}


def check(page, name: str, shots: Path) -> list[str]:
    """axe-core's violations on the page (rule id and the elements), after screenshots."""
    from axe_playwright_python.sync_playwright import Axe

    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(shots / f"{name}-{label}.png"), full_page=True)
    results = Axe().run(page)
    return [
        f"{name}: {v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
    ]


def test_no_recipient_page_has_an_accessibility_violation(
    browser, settings: Settings, session_factory, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("RECIPIENT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with session_scope(session_factory) as session:
        ann = make_contact(session, "ann@example.com").address_id
        bob = make_contact(session, "bob@example.com").address_id
        add_suppression(session, bob, scope="global", reason=Reason.COMPLAINT, source="fbl")
    signer = TokenSigner(settings.secret_keys)
    found: list[str] = []
    with serve(settings) as base:
        page = browser.new_page()
        page.goto(f"{base}/u/{signer.sign_link(LinkPurpose.UNSUBSCRIBE, ann, None)}")
        found += check(page, "1-unsubscribe", shots)
        page.get_by_role("button", name="Unsubscribe").click()
        page.wait_for_selector("text=You are unsubscribed")
        found += check(page, "2-unsubscribed", shots)
        page.get_by_role("button", name="Subscribe again").click()
        page.wait_for_selector("text=You are subscribed again")
        found += check(page, "3-preferences-saved", shots)
        page.goto(f"{base}/preferences/{signer.sign_link(LinkPurpose.PREFERENCES, bob, None)}")
        found += check(page, "4-preferences-complaint", shots)
        page.goto(f"{base}/u/{signer.sign_link(LinkPurpose.UNSUBSCRIBE, bob, None)}")
        page.get_by_role("button", name="Unsubscribe").click()
        page.wait_for_selector("text=You are unsubscribed")
        found += check(page, "5-unsubscribed-complaint", shots)
        page.goto(f"{base}/u/WzEsImRlYWRiZWVmIiwxLDFd.forged")
        found += check(page, "6-invalid", shots)
        page.close()
    assert found == []
