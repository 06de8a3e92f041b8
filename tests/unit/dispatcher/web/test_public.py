"""Recipient pages through Flask's test client: every route, every bad token shape."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.fanout import create_deliveries
from dispatcher.models import Campaign, Delivery
from dispatcher.settings import Settings
from dispatcher.web import create_app
from suppression.consent import consent_history, current_consent
from suppression.models import ConsentStatus, Event, Reason, Scope, Suppression
from suppression.suppressions import active_suppressions, add_suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.factories import make_contact

ADDRESS = "ann.smith@example.com"


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def contact_id(session_factory: sessionmaker[Session]) -> int:
    with session_scope(session_factory) as session:
        contact = make_contact(session, ADDRESS, affiliates=ConsentStatus.OPTED_IN)
        campaign = Campaign(
            name="December news",
            subject="s",
            template="new-releases",
            purpose="marketing",
            status="sending",
        )
        session.add(campaign)
        session.flush()
        create_deliveries(session, campaign)
        return contact.address_id


def link(settings: Settings, purpose: LinkPurpose, address_id: int) -> str:
    token = TokenSigner(settings.secret_keys).sign_link(purpose, address_id, 1)
    prefix = "/u/" if purpose is LinkPurpose.UNSUBSCRIBE else "/preferences/"
    return prefix + token


def state(session_factory: sessionmaker[Session], address_id: int) -> tuple:
    with session_scope(session_factory) as session:
        sups = sorted((s.reason, s.scope) for s in active_suppressions(session, address_id))
        marketing = current_consent(session, address_id, Scope.MARKETING)
        affiliates = current_consent(session, address_id, Scope.AFFILIATES)
        queued = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.status == "queued")
        )
        return (
            sups,
            marketing.status if marketing else None,
            affiliates.status if affiliates else None,
            queued,
        )


def events(session_factory: sessionmaker[Session], kind: str = "web_hit") -> list[Event]:
    with session_scope(session_factory) as session:
        return list(session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def csrf(page: bytes) -> str:
    found = re.search(rb'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no form token"
    return found.group(1).decode()


def test_get_shows_a_masked_address_and_changes_nothing(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    before = state(session_factory, contact_id)
    response = client.get(
        link(settings, LinkPurpose.UNSUBSCRIBE, contact_id),
        headers={"User-Agent": "LinkScanner/1.0"},
    )
    assert response.status_code == 200
    body = response.data.decode()
    assert "a***@e***.com" in body and ADDRESS not in body and "ann.smith" not in body
    assert "December news" in body
    assert state(session_factory, contact_id) == before
    hit = events(session_factory)[-1]
    assert (hit.outcome, hit.user_agent, hit.ip) == ("valid", "LinkScanner/1.0", "127.0.0.1")
    assert hit.detail["action"] == "shown"


@pytest.mark.parametrize(
    "shape",
    ["tampered", "truncated", "foreign", "garbage", "long", "unknown_address", "wrong_purpose"],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_bad_tokens_get_one_clear_page_and_change_nothing(
    client: FlaskClient,
    settings: Settings,
    session_factory,
    contact_id: int,
    shape: str,
    method: str,
) -> None:
    good = TokenSigner(settings.secret_keys).sign_link(LinkPurpose.UNSUBSCRIBE, contact_id, 1)
    token = {
        "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "truncated": good[: len(good) // 2],
        "foreign": TokenSigner(["someone-elses-key-123456"]).sign_link(
            LinkPurpose.UNSUBSCRIBE, contact_id, 1
        ),
        "garbage": "%00%ff<script>",
        "long": "x" * 3000,
        "unknown_address": TokenSigner(settings.secret_keys).sign_link(
            LinkPurpose.UNSUBSCRIBE, 987654, 1
        ),
        "wrong_purpose": TokenSigner(settings.secret_keys).sign_link(
            LinkPurpose.PREFERENCES, contact_id, 1
        ),
    }[shape]
    before = state(session_factory, contact_id)
    response = client.open(
        f"/u/{token}",
        method=method,
        data={"List-Unsubscribe": "One-Click"} if method == "POST" else None,
    )
    assert response.status_code == 400
    assert b"This link is not valid" in response.data
    assert b"2110 Colorado Avenue" in response.data
    assert state(session_factory, contact_id) == before
    assert events(session_factory)[-1].detail["action"] == "refused"


def test_unknown_address_and_forged_token_pages_are_identical(
    client: FlaskClient, settings: Settings, contact_id: int
) -> None:
    unknown = TokenSigner(settings.secret_keys).sign_link(LinkPurpose.UNSUBSCRIBE, 987654, 1)
    forged = TokenSigner(["someone-elses-key-123456"]).sign_link(LinkPurpose.UNSUBSCRIBE, 1, 1)
    assert client.get(f"/u/{unknown}").data == client.get(f"/u/{forged}").data


@pytest.mark.parametrize("multipart", [False, True])
def test_rfc8058_one_click_unsubscribes_without_cookie_or_redirect(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int, multipart: bool
) -> None:
    url = link(settings, LinkPurpose.UNSUBSCRIBE, contact_id)
    data = {"List-Unsubscribe": "One-Click"}
    response = client.post(
        url, data=data, content_type="multipart/form-data" if multipart else None
    )
    assert response.status_code == 200
    assert "Location" not in response.headers and "Set-Cookie" not in response.headers
    sups, marketing, _, queued = state(session_factory, contact_id)
    assert sups == [("unsubscribe", "marketing")] and marketing == "opted_out" and queued == 0
    # Mail providers retry: a second POST is harmless.
    assert client.post(url, data=data).status_code == 200
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1
        ledger = consent_history(session, contact_id)
        assert [c.source for c in ledger][-1] == "one_click"


def test_button_needs_the_pages_form_token(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    url = link(settings, LinkPurpose.UNSUBSCRIBE, contact_id)
    before = state(session_factory, contact_id)
    assert client.post(url, data={"csrf": "forged"}).status_code == 400
    assert client.post(url, data={}).status_code == 400
    assert state(session_factory, contact_id) == before
    page = client.get(url).data
    done = client.post(url, data={"csrf": csrf(page)})
    assert done.status_code == 200 and b"You are unsubscribed" in done.data
    assert state(session_factory, contact_id)[0] == [("unsubscribe", "marketing")]


def test_form_token_of_one_link_does_not_work_for_another(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    with session_scope(session_factory) as session:
        other = make_contact(session, "bob@example.com").address_id
    page = client.get(link(settings, LinkPurpose.UNSUBSCRIBE, contact_id)).data
    response = client.post(
        link(settings, LinkPurpose.UNSUBSCRIBE, other), data={"csrf": csrf(page)}
    )
    assert response.status_code == 400
    assert state(session_factory, other)[0] == []


def test_resubscribe_lifts_only_the_own_unsubscribe(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    url = link(settings, LinkPurpose.UNSUBSCRIBE, contact_id)
    done = client.post(url, data={"csrf": csrf(client.get(url).data)})
    action = re.search(rb'action="(/preferences/[^"]+)"', done.data).group(1).decode()
    again = client.post(
        action, data={"csrf": csrf(done.data), "only": "marketing", "marketing": "yes"}
    )
    assert again.status_code == 200 and b"subscribed again" in again.data
    sups, marketing, affiliates, _ = state(session_factory, contact_id)
    assert sups == [] and marketing == "opted_in" and affiliates == "opted_in"


def test_preferences_change_consent_per_scope_in_the_ledger(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    url = link(settings, LinkPurpose.PREFERENCES, contact_id)
    page = client.get(url)
    assert (
        page.status_code == 200
        and b'id="marketing-yes" name="marketing" value="yes" checked' in page.data
    )
    saved = client.post(
        url,
        data={"csrf": csrf(page.data), "marketing": "yes", "affiliates": "no"},
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert saved.status_code == 200 and b"preferences are saved" in saved.data
    sups, marketing, affiliates, _ = state(session_factory, contact_id)
    assert (sups, marketing, affiliates) == ([], "opted_in", "opted_out")
    with session_scope(session_factory) as session:
        last = consent_history(session, contact_id)[-1]
        assert (last.scope, last.status, last.source, last.ip) == (
            "affiliates",
            "opted_out",
            "preferences",
            "10.1.2.3",
        )
    client.post(url, data={"csrf": csrf(saved.data), "marketing": "no", "affiliates": "no"})
    assert state(session_factory, contact_id)[:2] == ([("unsubscribe", "marketing")], "opted_out")


@pytest.mark.parametrize(
    "reason", [Reason.HARD_BOUNCE, Reason.COMPLAINT, Reason.POSTAL_REQUEST, Reason.LEGAL]
)
def test_staff_suppressed_address_is_told_it_cannot_resubscribe_here(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int, reason: Reason
) -> None:
    with session_scope(session_factory) as session:
        add_suppression(session, contact_id, scope="global", reason=reason, source="staff")
        add_suppression(
            session, contact_id, scope="marketing", reason=Reason.UNSUBSCRIBE, source="link"
        )
    url = link(settings, LinkPurpose.PREFERENCES, contact_id)
    page = client.get(url)
    assert reason.value.replace("_", " ").encode() in page.data
    before = state(session_factory, contact_id)
    response = client.post(
        url, data={"csrf": csrf(page.data), "marketing": "yes", "affiliates": "yes"}
    )
    assert response.status_code == 409 and b"cannot be re-subscribed here" in response.data
    assert state(session_factory, contact_id) == before


def test_oversized_body_is_refused(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    before = state(session_factory, contact_id)
    response = client.post(
        link(settings, LinkPurpose.UNSUBSCRIBE, contact_id),
        data={"List-Unsubscribe": "One-Click", "pad": "x" * 100_000},
    )
    assert response.status_code == 413
    assert state(session_factory, contact_id) == before


def test_security_headers_and_no_third_party_resources(
    client: FlaskClient, settings: Settings, contact_id: int
) -> None:
    response = client.get(link(settings, LinkPurpose.PREFERENCES, contact_id))
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert not re.search(rb'(src|href)="(https?:)?//', response.data)
    assert client.get("/static/site.css").status_code == 200
