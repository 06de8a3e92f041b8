"""Recipient pages through Flask's test client: every route, every bad token shape."""

from __future__ import annotations

import logging
import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from dispatcher.db import session_scope
from dispatcher.settings import Settings
from suppression.consent import consent_history
from suppression.models import Reason, Suppression
from suppression.suppressions import add_suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.factories import make_contact
from tests.unit.dispatcher.web.pages import ADDRESS, csrf, events, link, state


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
    assert b"mailto:unsubscribe@killertracks.com" in response.data
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
    with session_scope(session_factory) as session:
        ledger = [(c.scope, c.status, c.source) for c in consent_history(session, contact_id)]
    assert ledger[-1] == ("marketing", "opted_out", "one_click")
    # Mail providers retry: more POSTs are harmless and add no row but their audit hits.
    for _ in range(2):
        assert client.post(url, data=data).status_code == 200
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 1
        assert len(consent_history(session, contact_id)) == len(ledger)
    actions = [e.detail["action"] for e in events(session_factory)]
    assert actions == ["unsubscribed", "already_unsubscribed", "already_unsubscribed"]


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
    assert again.status_code == 303 and again.location.endswith("?done=marketing-on")
    assert b"subscribed again" in client.get(again.location).data
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
    assert (
        saved.status_code == 303 and saved.location == f"{settings.base_url}{url}?done=sharing-off"
    )
    shown = client.get(saved.location)
    assert b"We will not share your details" in shown.data
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
    client.post(url, data={"csrf": csrf(shown.data), "marketing": "no", "affiliates": "no"})
    assert state(session_factory, contact_id)[:2] == ([("unsubscribe", "marketing")], "opted_out")


@pytest.mark.parametrize(
    "reason", [Reason.HARD_BOUNCE, Reason.COMPLAINT, Reason.POSTAL_REQUEST, Reason.LEGAL]
)
def test_staff_suppressed_address_is_told_it_cannot_resubscribe_here(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int, reason: Reason
) -> None:
    url = link(settings, LinkPurpose.PREFERENCES, contact_id)
    stale = client.get(url)  # loaded before staff suppressed the address
    with session_scope(session_factory) as session:
        add_suppression(session, contact_id, scope="global", reason=reason, source="staff")
        add_suppression(
            session, contact_id, scope="marketing", reason=Reason.UNSUBSCRIBE, source="link"
        )
    page = client.get(url)
    assert b'id="blocked"' in page.data and b'name="marketing"' not in page.data
    before = state(session_factory, contact_id)
    response = client.post(url, data={"csrf": csrf(stale.data), "marketing": "yes"})
    assert response.status_code == 409 and b"cannot be re-subscribed here" in response.data
    assert state(session_factory, contact_id) == before


def test_a_scope_the_form_does_not_mention_stays_as_it_is(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    url = link(settings, LinkPurpose.PREFERENCES, contact_id)
    token = csrf(client.get(url).data)
    assert client.post(url, data={"csrf": token, "affiliates": "no"}).status_code == 303
    sups, marketing, affiliates, queued = state(session_factory, contact_id)
    assert (sups, marketing, affiliates, queued) == ([], "opted_in", "opted_out", 1)
    hit = events(session_factory)[-1]
    assert (hit.detail["action"], hit.detail["changes"]) == ("saved", ["affiliates:opted_out"])
    # The same answers again change nothing and say so in the audit trail.
    client.post(url, data={"csrf": token, "affiliates": "no"})
    assert events(session_factory)[-1].detail["action"] == "unchanged"
    with session_scope(session_factory) as session:
        assert len(consent_history(session, contact_id)) == 3  # import x2, one change


def test_no_from_someone_never_asked_is_recorded_and_outranks_a_later_import(
    client: FlaskClient, settings: Settings, session_factory, tmp_path
) -> None:
    """Someone never asked (a contact imported without consent, a reader of a service
    notice) answers "no" to both questions on the preference page: both are recorded as
    opt-outs, so an import saying yes, dated an hour before their answer, does not opt them
    in (found by the red-team pass: the answers equalled what they received, so nothing was
    written)."""
    from datetime import UTC, datetime, timedelta

    from dispatcher.contacts.importer import import_contacts

    with session_scope(session_factory) as session:
        never_asked = make_contact(session, "bo@example.com", marketing=None).address_id
        other = make_contact(session, "cy@example.com", marketing=None).address_id
    url = link(settings, LinkPurpose.PREFERENCES, never_asked)
    page = client.get(url)
    answer = {"csrf": csrf(page.data), "marketing": "no", "affiliates": "no"}
    assert client.post(url, data=answer).status_code == 303
    sups, marketing, affiliates, _ = state(session_factory, never_asked)
    assert (sups, marketing, affiliates) == (
        [("unsubscribe", "marketing")],
        "opted_out",
        "opted_out",
    )
    earlier = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    crm = tmp_path / "crm.csv"
    crm.write_text(
        "email,marketing_consent,affiliates_consent,consent_at\n"
        f"bo@example.com,yes,yes,{earlier}\n"
        f"cy@example.com,yes,yes,{earlier}\n"
    )
    import_contacts(session_factory, crm, source="crm")
    assert state(session_factory, other)[1:3] == ("opted_in", "opted_in")  # the file applies
    assert state(session_factory, never_asked)[1:3] == ("opted_out", "opted_out")
    # Saying no again changes nothing.
    client.post(url, data={**answer, "csrf": csrf(client.get(url).data)})
    assert events(session_factory)[-1].detail["action"] == "unchanged"


@pytest.mark.parametrize("field", ["marketing", "affiliates"])
def test_an_answer_other_than_yes_or_no_is_refused(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int, field: str
) -> None:
    url = link(settings, LinkPurpose.PREFERENCES, contact_id)
    token = csrf(client.get(url).data)
    before = state(session_factory, contact_id)
    response = client.post(url, data={"csrf": token, field: "maybe"})
    assert response.status_code == 400
    assert state(session_factory, contact_id) == before
    assert events(session_factory)[-1].detail["action"] == "refused_400"


def test_preferences_with_a_bad_token_or_form_token_change_nothing(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    url = link(settings, LinkPurpose.PREFERENCES, contact_id)
    before = state(session_factory, contact_id)
    forged = client.post(url[:-3] + "xyz", data={"marketing": "no", "affiliates": "no"})
    assert forged.status_code == 400 and b"This link is not valid" in forged.data
    stale = client.post(url, data={"csrf": "x", "marketing": "no", "affiliates": "no"})
    assert stale.status_code == 400 and b"Please try again" in stale.data
    assert state(session_factory, contact_id) == before
    assert [e.detail["action"] for e in events(session_factory)] == [
        "refused",
        "refused_form_token",
    ]


def test_the_resubscribe_button_twice_is_harmless(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    url = link(settings, LinkPurpose.UNSUBSCRIBE, contact_id)
    done = client.post(url, data={"csrf": csrf(client.get(url).data)})
    action = re.search(rb'action="(/preferences/[^"]+)"', done.data).group(1).decode()
    for said in (b"You are subscribed again", b"Nothing changed"):
        again = client.post(action, data={"csrf": csrf(done.data), "marketing": "yes"})
        assert again.status_code == 303 and said in client.get(again.location).data
    assert state(session_factory, contact_id)[:2] == ([], "opted_in")
    with session_scope(session_factory) as session:
        sources = [c.source for c in consent_history(session, contact_id)]
    assert sources[-2:] == ["unsubscribe_page", "preferences"]


def test_addresses_never_reach_the_application_log(
    client: FlaskClient,
    settings: Settings,
    contact_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = link(settings, LinkPurpose.UNSUBSCRIBE, contact_id)
    client.post(url, data={"csrf": csrf(client.get(url).data)})
    client.post(url, data={"List-Unsubscribe": "One-Click"})
    prefs = link(settings, LinkPurpose.PREFERENCES, contact_id)
    client.post(prefs, data={"csrf": csrf(client.get(prefs).data), "marketing": "yes"})
    client.get(url + "tampered")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert ADDRESS not in logged and "ann.smith" not in logged
