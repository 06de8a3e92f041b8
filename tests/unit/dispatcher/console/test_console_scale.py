"""The console's campaign counts, server-side sessions and paged lists, on SQLite and on
PostgreSQL (each test runs on both; PostgreSQL is skipped off CI when it is not running)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns import counts
from dispatcher.campaigns.deliveries import stop_queued
from dispatcher.campaigns.fanout import fan_out
from dispatcher.console.staff import disable_staff
from dispatcher.db import session_scope, upgrade
from dispatcher.models import Delivery, Staff, StaffSession
from dispatcher.sending.batch import send_batch
from dispatcher.settings import Settings
from suppression.models import Address, Event, Reason
from suppression.suppressions import add_suppression
from suppression.tokens import TokenSigner
from suppression.unsubscribe import unsubscribe_address
from tests.conftest import settings_for
from tests.factories import bulk_contacts, make_contact
from tests.support.backends import postgres_database, require
from tests.unit.dispatcher.console.conftest import PASSWORD, csrf, post
from tests.unit.dispatcher.console.test_console import new_campaign


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, _migrated_template: Path
) -> Iterator[Settings]:
    """The console's settings on each backend (overrides the suite's SQLite-only fixture)."""
    if request.param == "sqlite":
        import shutil

        home = tmp_path / "var"
        home.mkdir()
        shutil.copy(_migrated_template, home / "dispatcher.db")
        yield settings_for(home)
        return
    require("postgresql")
    with postgres_database() as url:
        config = settings_for(tmp_path / "var", database_url=url)
        upgrade(config)
        yield config


def _rows(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, int]:
    with sessions() as session:
        return {
            s: int(n)
            for s, n in session.execute(
                select(Delivery.status, func.count())
                .where(Delivery.campaign_id == campaign_id)
                .group_by(Delivery.status)
            )
        }


# --- campaign counts -----------------------------------------------------------------------


def test_campaign_pages_show_the_counters_and_they_equal_the_rows(
    signed_in, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        bulk_contacts(session, 30, not_opted_in_every=7, suppressed_every=11)
    client = signed_in("editor")
    new_campaign(client)
    post(client, "/campaigns/1/schedule", {"when": "now"}, "/campaigns/1")
    signer = TokenSigner(settings.secret_keys)
    batches = list(fan_out(session_factory, 1, 10))
    send_batch(settings, session_factory, signer, 1, *batches[0])
    # Half-way: someone unsubscribes; their queued row is stopped, the counters follow.
    with session_scope(session_factory) as session:
        address = session.scalar(select(Address).where(Address.address == "r000025@example.com"))
        assert address is not None
        unsubscribe_address(session, address, stop_queued=stop_queued, source="test")
    progress = client.get("/campaigns/1/progress.json").get_json()
    rows = _rows(session_factory, 1)
    assert progress["deliveries"]["cancelled"] == rows["cancelled"] == 1
    assert progress["deliveries"]["queued"] == rows["queued"]
    for first, last in batches[1:]:
        send_batch(settings, session_factory, signer, 1, first, last)
    rows = _rows(session_factory, 1)
    progress = client.get("/campaigns/1/progress.json").get_json()
    assert {k: v for k, v in progress["deliveries"].items() if v} == rows
    assert progress["finished"] and progress["status"] == "done"
    assert progress["skipped_by_reason"]["not_asked"] == 5  # i % 7 == 1 of 30
    page = client.get("/campaigns/1").get_data(as_text=True)
    assert f">{rows['sent']}<" in page
    listing = client.get("/campaigns").get_data(as_text=True)
    assert str(rows["sent"]) in listing
    with session_factory() as session:
        assert counts.verify(session) == []
        # Folding keeps every total (and the sends per minute).
        before = counts.current(session, [1])[1]
        per_minute = counts.sent_per_minute(session, 1)
    with session_scope(session_factory) as session:
        from datetime import timedelta

        from suppression.models import utcnow

        counts.fold(session, 1, now=utcnow() + timedelta(hours=1))
    with session_factory() as session:
        assert counts.current(session, [1])[1] == before
        assert counts.sent_per_minute(session, 1) == per_minute
        assert counts.verify(session) == []


# --- sessions ------------------------------------------------------------------------------


def _sign_in(app, email: str) -> FlaskClient:
    client = app.test_client()
    response = client.post(
        "/sign-in", data={"email": email, "password": PASSWORD, "csrf_token": csrf(client)}
    )
    assert response.status_code == 302
    return client


def _signed_out(client: FlaskClient) -> bool:
    response = client.get("/campaigns")
    return response.status_code == 302 and "/sign-in" in response.headers["Location"]


def _session_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r"/sessions/(\d+)/end", page)]


def test_sessions_are_listed_and_staff_end_their_other_sessions(signed_in, app) -> None:
    laptop = signed_in("editor", "ed@staff.example")
    phone = _sign_in(app, "ed@staff.example")
    page = laptop.get("/sessions").get_data(as_text=True)
    assert "this session" in page and "ed@staff.example" in page
    assert len(_session_ids(page)) == 1  # the other one, with its button
    post(laptop, "/sessions/end-others", {}, "/sessions")
    assert _signed_out(phone)
    assert not _signed_out(laptop)


def test_a_cookie_replayed_after_sign_out_is_refused(
    signed_in, session_factory: sessionmaker[Session]
) -> None:
    client = signed_in("viewer")
    stolen = client.get_cookie("console_session")
    assert stolen is not None
    post(client, "/sign-out", {}, "/campaigns")
    thief = client.application.test_client()
    thief.set_cookie("console_session", stolen.value)
    assert _signed_out(thief)
    with session_factory() as session:
        (row,) = session.scalars(select(StaffSession)).all()
        assert row.end_reason == "signed_out" and row.ended_at is not None


def test_an_admin_signs_out_anyones_session_and_staff_only_their_own(
    signed_in, app, session_factory: sessionmaker[Session]
) -> None:
    viewer = signed_in("viewer", "vi@staff.example")
    admin = signed_in("admin", "ad@staff.example")
    page = admin.get("/sessions").get_data(as_text=True)
    assert "vi@staff.example" in page and "ad@staff.example" in page
    with session_factory() as session:
        ids = dict(
            session.execute(
                select(Staff.email, StaffSession.id).join(Staff, Staff.id == StaffSession.staff_id)
            ).all()
        )
    viewer_session, admin_session = ids["vi@staff.example"], ids["ad@staff.example"]
    # A viewer cannot end the admin's session: refused as not theirs, nothing ends.
    response = post(viewer, f"/sessions/{admin_session}/end", {}, "/sessions")
    assert response.status_code == 302
    assert not _signed_out(admin)
    post(admin, f"/sessions/{viewer_session}/end", {}, "/sessions")
    assert _signed_out(viewer)
    with session_factory() as session:
        row = session.get(StaffSession, viewer_session)
        assert row is not None and row.end_reason == "ended_by_admin"
        assert row.ended_by == "ad@staff.example"
        ended = session.scalars(
            select(Event.outcome).where(Event.kind == "staff_session_ended").order_by(Event.id)
        ).all()
        assert ended == ["not_found", "ok"]


def test_disabling_an_account_ends_its_sessions_at_once(
    signed_in, session_factory: sessionmaker[Session]
) -> None:
    client = signed_in("editor", "gone@staff.example")
    assert not _signed_out(client)
    with session_scope(session_factory) as session:
        disable_staff(session, "gone@staff.example", actor="admin@test")
    assert _signed_out(client)
    with session_factory() as session:
        (row,) = session.scalars(select(StaffSession)).all()
        assert row.end_reason == "staff_disabled"


def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(
    signed_in, app, session_factory: sessionmaker[Session]
) -> None:
    here = signed_in("viewer", "pw@staff.example")
    there = _sign_in(app, "pw@staff.example")
    wrong = post(
        here,
        "/account/password",
        {"current": "not it", "password": "a new password!!", "confirm": "a new password!!"},
        "/account/password",
    )
    assert wrong.status_code == 400 and not _signed_out(there)
    new = "a brand new passphrase"
    done = post(
        here,
        "/account/password",
        {"current": PASSWORD, "password": new, "confirm": new},
        "/account/password",
    )
    assert done.status_code == 302
    assert _signed_out(there) and not _signed_out(here)
    again = app.test_client()
    response = again.post(
        "/sign-in",
        data={"email": "pw@staff.example", "password": new, "csrf_token": csrf(again)},
    )
    assert response.status_code == 302


# --- paged lists ---------------------------------------------------------------------------


def _walk(client: FlaskClient, url: str, pattern: str) -> list[str]:
    """Every row across the pages, following "Older" links."""
    seen: list[str] = []
    while url:
        page = client.get(url).get_data(as_text=True)
        seen.extend(re.findall(pattern, page))
        found = re.search(r'href="([^"]+)" rel="next"', page)
        url = found.group(1).replace("&amp;", "&") if found else ""
    return seen


def test_suppressions_page_through_every_row_once_newest_first_with_filters(
    signed_in, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        bulk_contacts(session, 229)
        for address_id in session.scalars(select(Address.id)):
            add_suppression(
                session, address_id, scope="global", reason=Reason.COMPLAINT, source="test"
            )
        for i in range(5):
            make_contact(session, f"p{i}@example.com", suppressed=Reason.POSTAL_REQUEST)
    client = signed_in("editor")
    rows = _walk(client, "/suppressions", r'people\?address=([^"]+)"')
    assert len(rows) == len(set(rows)) == 234
    assert rows[:5] == [f"p{i}@example.com" for i in range(4, -1, -1)]
    postal = _walk(client, "/suppressions?reason=postal_request", r'people\?address=([^"]+)"')
    assert len(postal) == 5
    marketing = _walk(client, "/suppressions?scope=marketing", r'people\?address=([^"]+)"')
    assert marketing == postal  # the complaints are global


def test_audit_log_pages_and_filters_by_kind_and_staff_member(
    signed_in, session_factory: sessionmaker[Session]
) -> None:
    client = signed_in("admin", "au@staff.example")
    with session_scope(session_factory) as session:
        session.execute(
            insert(Event),
            [
                {"kind": "console_thing", "actor": f"s{i % 3}@staff.example", "detail": {"n": i}}
                for i in range(250)
            ]
            + [{"kind": "unsubscribed", "actor": None, "detail": {}} for _ in range(40)],
        )
    everything = _walk(client, "/audit", r"<td>(console_thing|unsubscribed|staff_\w+)</td>")
    assert everything.count("console_thing") == 250
    assert "unsubscribed" not in everything  # recipients' events are not the staff log
    one = _walk(client, "/audit?actor=s1%40staff.example", r"<td>(s\d@staff.example)</td>")
    assert one == ["s1@staff.example"] * 83
    kind = _walk(client, "/audit?kind=staff_sign_in", r"<td>(staff_sign_in)</td>")
    assert len(kind) >= 1


def test_suppression_rows_have_the_indexes_the_filters_walk(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        names = {i["name"] for i in _indexes(session, "suppressions")} | {
            i["name"] for i in _indexes(session, "events")
        }
    assert {
        "ix_suppressions_reason_id",
        "ix_suppressions_scope_id",
        "ix_events_staff",
        "ix_events_kind_id",
        "ix_events_actor_id",
    } <= names


def _indexes(session: Session, table: str) -> list[dict]:
    from sqlalchemy import inspect

    return inspect(session.get_bind()).get_indexes(table)
