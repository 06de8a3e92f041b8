"""A recipient, in headless Chromium, follows the link in a received message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import fan_out
from dispatcher.campaigns.services import create_campaign, schedule_campaign
from dispatcher.db import session_scope
from dispatcher.sending.batch import send_batch
from dispatcher.settings import Settings
from suppression.consent import consent_history, current_consent
from suppression.models import Reason, Scope
from suppression.suppressions import active_suppressions, add_suppression
from suppression.tokens import TokenSigner
from tests.factories import make_contact
from tests.support.smtp_sink import SmtpSink
from tests.support.web_server import free_port, serve

pytestmark = pytest.mark.browser


def send_campaign(settings: Settings, sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        campaign = create_campaign(
            session,
            settings,
            name="Winter releases",
            subject="{{ greeting_name }}, new tracks",
            template="new-releases",
        )
        schedule_campaign(session, settings, campaign.id)
        campaign_id = campaign.id
    signer = TokenSigner(settings.secret_keys)
    for first, last in fan_out(sessions, campaign_id, 100):
        send_batch(settings, sessions, signer, campaign_id, first, last)


def link_in_body(sink: SmtpSink, address: str, path: str) -> str:
    message = next(m.message for m in sink.received() if address in m.recipients)
    html = message.get_body(("html",)).get_content()
    return re.search(rf'href="(http[^"]+/{path}/[^"]+)"', html).group(1)


def state(sessions: sessionmaker[Session], address_id: int) -> tuple:
    with session_scope(sessions) as session:
        marketing = current_consent(session, address_id, Scope.MARKETING)
        affiliates = current_consent(session, address_id, Scope.AFFILIATES)
        return (
            [s.reason for s in active_suppressions(session, address_id)],
            marketing.status if marketing else None,
            affiliates.status if affiliates else None,
        )


def test_unsubscribe_resubscribe_and_preferences_by_clicking(
    browser, settings: Settings, session_factory, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    port = free_port()
    local = settings.replace(base_url=f"http://127.0.0.1:{port}", mail_url=smtp_sink.url)
    with session_scope(session_factory) as session:
        ann = make_contact(session, "ann@example.com", first_name="Ann").address_id
    send_campaign(local, session_factory)
    url = link_in_body(smtp_sink, "ann@example.com", "u")

    with serve(local, port):
        page = browser.new_page()
        # A Content-Security-Policy violation (a blocked stylesheet, say) is a console error.
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("requestfailed", lambda r: errors.append(r.url))
        page.on("response", lambda r: errors.append(r.url) if r.status >= 400 else None)
        page.goto(url)
        assert page.locator("h1").inner_text() == "Unsubscribe from our marketing e-mail"
        header = page.locator("header").evaluate("e => getComputedStyle(e).backgroundColor")
        assert header == "rgb(17, 17, 17)", "the site stylesheet did not load"
        assert "a***@e***.com" in page.content() and "ann@example.com" not in page.content()
        page.screenshot(path=str(tmp_path / "1-confirm.png"))
        assert state(session_factory, ann) == ([], "opted_in", None)  # opening changed nothing

        page.get_by_role("button", name="Unsubscribe").click()
        page.wait_for_selector("text=You are unsubscribed")
        page.screenshot(path=str(tmp_path / "2-unsubscribed.png"))
        assert state(session_factory, ann) == (["unsubscribe"], "opted_out", None)

        page.get_by_role("button", name="Subscribe again").click()
        page.wait_for_selector("text=You are subscribed again")
        page.screenshot(path=str(tmp_path / "3-resubscribed.png"))
        assert state(session_factory, ann) == ([], "opted_in", None)

        page.get_by_label("Yes, affiliates may contact me").check()
        page.get_by_role("button", name="Save preferences").click()
        page.wait_for_selector("text=Affiliated companies may receive your name and address")
        page.get_by_label("No marketing e-mail").check()
        page.get_by_role("button", name="Save preferences").click()
        page.wait_for_selector("text=You will receive no more marketing e-mail")
        assert "Marketing e-mail: no" in page.locator("#state").inner_text()
        page.screenshot(path=str(tmp_path / "4-preferences.png"))
        assert state(session_factory, ann) == (["unsubscribe"], "opted_out", "opted_in")
        # The form redirected after its POST: a refresh asks for the page, it posts nothing.
        assert "?done=marketing-off" in page.url
        with session_scope(session_factory) as session:
            ledger = len(consent_history(session, ann))
        page.reload()
        page.wait_for_selector("text=You will receive no more marketing e-mail")
        with session_scope(session_factory) as session:
            assert len(consent_history(session, ann)) == ledger
        page.close()
    assert errors == []
    assert (tmp_path / "4-preferences.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("reason", "why"),
    [
        (Reason.HARD_BOUNCE, "returned as undeliverable"),
        (Reason.REPEATED_SOFT_BOUNCE, "returned again and again"),
        (Reason.COMPLAINT, "a complaint about our e-mail was reported"),
    ],
)
def test_a_staff_suppressed_address_is_told_plainly_it_cannot_resubscribe(
    browser,
    settings: Settings,
    session_factory,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    reason: Reason,
    why: str,
) -> None:
    port = free_port()
    local = settings.replace(base_url=f"http://127.0.0.1:{port}", mail_url=smtp_sink.url)
    with session_scope(session_factory) as session:
        bob = make_contact(session, "bob@example.com", first_name="Bob").address_id
    send_campaign(local, session_factory)
    url = link_in_body(smtp_sink, "bob@example.com", "preferences")
    with session_scope(session_factory) as session:
        # Bob is still opted in in the ledger; then his mailbox bounced, or he complained.
        add_suppression(session, bob, scope="global", reason=reason, source="provider")
    with serve(local, port):
        page = browser.new_page()
        page.goto(url)
        blocked = page.locator("#blocked").inner_text()
        assert why in blocked and "cannot be changed on this page" in blocked
        assert "Marketing e-mail: no" in page.locator("#state").inner_text()
        # No choice that cannot take effect is offered.
        assert page.get_by_role("radio").count() == 0
        assert page.get_by_role("button", name="Save preferences").count() == 0
        page.screenshot(path=str(tmp_path / "blocked.png"))
        page.close()
    assert state(session_factory, bob) == ([reason.value], "opted_in", None)


def test_a_tampered_link_shows_the_invalid_page(
    browser, settings: Settings, tmp_path: Path
) -> None:
    with serve(settings) as base:
        page = browser.new_page()
        response = page.goto(f"{base}/u/WzEsImRlYWRiZWVmIiwxLDFd.forged-signature")
        assert response.status == 400
        assert page.locator("h1").inner_text() == "This link is not valid"
        page.screenshot(path=str(tmp_path / "invalid.png"))
        page.close()
