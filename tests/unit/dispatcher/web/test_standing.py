"""What the preference pages say is what the gate does: an address suppressed after a
complaint is shown as receiving nothing, is offered no choice that cannot take effect, and a
saved form redirects (post/redirect/get) so that a refresh posts nothing again."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from dispatcher.db import session_scope
from dispatcher.settings import Settings
from suppression.consent import consent_history
from suppression.models import Reason
from suppression.suppressions import add_suppression
from suppression.tokens import LinkPurpose
from tests.unit.dispatcher.web.pages import csrf, events, link, state


def text(page: bytes) -> str:
    """The page's words, tags removed, spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", page.decode()).split())


@pytest.fixture
def complained(session_factory, contact_id: int) -> int:
    """Ann is opted in to marketing and sharing in the ledger, then her provider reports a
    complaint: the gate sends her nothing, whatever the ledger says."""
    with session_scope(session_factory) as session:
        add_suppression(session, contact_id, scope="global", reason=Reason.COMPLAINT, source="fbl")
    return contact_id


def test_a_complaint_suppressed_address_is_shown_the_real_state_and_no_choice(
    client: FlaskClient, settings: Settings, complained: int
) -> None:
    page = client.get(link(settings, LinkPurpose.PREFERENCES, complained))
    words = text(page.data)
    assert page.status_code == 200
    assert "Marketing e-mail: no" in words
    assert "Details shared with affiliated companies: no" in words
    assert "Service messages about changes to our terms: no" in words
    assert "because a complaint about our e-mail was reported" in words
    assert "This cannot be changed on this page" in words
    assert b'name="marketing"' not in page.data and b'name="affiliates"' not in page.data
    assert b"checked" not in page.data and b"preferences are saved" not in page.data


@pytest.mark.parametrize(
    "answers", [{"marketing": "yes", "affiliates": "yes"}, {"affiliates": "yes"}]
)
def test_a_complaint_suppressed_address_cannot_save_yes_and_is_told_nothing_changed(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int, answers: dict
) -> None:
    url = link(settings, LinkPurpose.PREFERENCES, contact_id)
    token = csrf(client.get(url).data)  # the form as it was before the complaint
    with session_scope(session_factory) as session:
        add_suppression(session, contact_id, scope="global", reason=Reason.COMPLAINT, source="fbl")
    before = state(session_factory, contact_id)
    with session_scope(session_factory) as session:
        ledger = len(consent_history(session, contact_id))
    response = client.post(url, data={"csrf": token, **answers})
    words = text(response.data)
    assert response.status_code == 409
    assert "Nothing was changed" in words and "saved" not in words
    assert "Marketing e-mail: no" in words
    assert state(session_factory, contact_id) == before
    with session_scope(session_factory) as session:
        assert len(consent_history(session, contact_id)) == ledger


def test_the_unsubscribed_page_offers_no_resubscribe_to_a_complaint_suppressed_address(
    client: FlaskClient, settings: Settings, complained: int
) -> None:
    url = link(settings, LinkPurpose.UNSUBSCRIBE, complained)
    done = client.post(url, data={"csrf": csrf(client.get(url).data)})
    assert done.status_code == 200 and b'id="resubscribe"' not in done.data
    assert "only our staff can change that" in text(done.data)


def test_a_saved_form_redirects_and_a_refresh_posts_nothing_again(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    url = link(settings, LinkPurpose.PREFERENCES, contact_id)
    saved = client.post(
        url, data={"csrf": csrf(client.get(url).data), "marketing": "no", "affiliates": "no"}
    )
    assert saved.status_code == 303
    # Redirects are built on the configured base URL, never the Host header.
    assert saved.location == f"{settings.base_url}{url}?done=marketing-off,sharing-off"
    with session_scope(session_factory) as session:
        ledger = len(consent_history(session, contact_id))
    for _ in range(2):  # what the browser shows, and what a refresh asks for
        shown = client.get(saved.location)
        words = text(shown.data)
        assert "You will receive no more marketing e-mail" in words
        assert "Marketing e-mail: no" in words
    with session_scope(session_factory) as session:
        assert len(consent_history(session, contact_id)) == ledger
    # The page hits of one link, IP and browser fold into one row (first and last seen, and
    # how often); the save has a row of its own.
    assert [(e.detail["action"], e.count) for e in events(session_factory)][-2:] == [
        ("shown", 3),
        ("saved", 1),
    ]


def test_unknown_done_codes_show_nothing(
    client: FlaskClient, settings: Settings, contact_id: int
) -> None:
    url = link(settings, LinkPurpose.PREFERENCES, contact_id)
    page = client.get(url + "?done=<script>,marketing-on")
    assert b"<script>" not in page.data and b"You are subscribed again" in page.data


def test_sharing_stopped_by_staff_is_not_shown_as_shared(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    """Ann is opted in to sharing, but staff stopped sharing her details (affiliates scope)."""
    with session_scope(session_factory) as session:
        add_suppression(
            session, contact_id, scope="affiliates", reason=Reason.MANUAL, source="staff"
        )
    page = client.get(link(settings, LinkPurpose.PREFERENCES, contact_id) + "?done=sharing-on")
    words = text(page.data)
    assert "Marketing e-mail: yes" in words
    assert "Details shared with affiliated companies: no" in words
    assert "Your details are still not shared" in words
