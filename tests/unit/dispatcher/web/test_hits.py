"""Page views counted in memory and written in batches: a GET writes nothing itself, a
storm of one link from one browser is one row with its count, and nothing counted is lost
at a clean stop or when a write fails."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.settings import Settings
from dispatcher.web import create_app
from dispatcher.web.hits import HitCounter
from suppression.events import Hit, event_row, fold_key
from suppression.models import Event
from suppression.tokens import LinkPurpose
from tests.unit.dispatcher.web.pages import link
from workers.process import wait_until


def rows(session_factory: sessionmaker[Session]) -> list[tuple]:
    with session_scope(session_factory) as session:
        return [
            (e.user_agent, e.count, e.detail["route"], e.last_at is not None)
            for e in session.scalars(
                select(Event).where(Event.kind == "web_hit").order_by(Event.id)
            )
        ]


def counter(app: Flask) -> HitCounter:
    found = app.extensions["dispatcher.hits"]
    assert isinstance(found, HitCounter)
    return found


def test_fifty_gets_write_nothing_then_one_row_with_their_count(
    app: Flask, client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    page = link(settings, LinkPurpose.UNSUBSCRIBE, contact_id)
    for _ in range(50):
        assert client.get(page, headers={"User-Agent": "SafeLinks/1.0"}).status_code == 200
    assert client.get(page, headers={"User-Agent": "Mozilla/5.0"}).status_code == 200
    prefs = link(settings, LinkPurpose.PREFERENCES, contact_id)
    assert client.get(prefs, headers={"User-Agent": "Mozilla/5.0"}).status_code == 200
    assert rows(session_factory) == []  # the requests wrote nothing
    assert counter(app).waiting() == 52
    assert counter(app).flush() == 52
    assert sorted(rows(session_factory)) == [
        ("Mozilla/5.0", 1, "preferences", False),
        ("Mozilla/5.0", 1, "unsubscribe", False),
        ("SafeLinks/1.0", 50, "unsubscribe", True),
    ]
    assert counter(app).waiting() == 0


def test_a_later_flush_raises_the_count_of_the_row_already_written(
    app: Flask, client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    page = link(settings, LinkPurpose.UNSUBSCRIBE, contact_id)
    for _ in range(3):
        client.get(page, headers={"User-Agent": "SafeLinks/1.0"})
    counter(app).flush()
    client.get(page, headers={"User-Agent": "SafeLinks/1.0"})
    counter(app).flush()
    assert rows(session_factory) == [("SafeLinks/1.0", 4, "unsubscribe", True)]
    with session_scope(session_factory) as session:
        first, last = session.execute(
            select(Event.occurred_at, Event.last_at).where(Event.kind == "web_hit")
        ).one()
    assert last > first


def test_the_thread_writes_them_without_being_asked(
    settings: Settings, session_factory, contact_id: int
) -> None:
    app = create_app(settings.replace(web_hit_flush_seconds=0.05))
    page = link(settings, LinkPurpose.PREFERENCES, contact_id)
    for _ in range(5):
        app.test_client().get(page, headers={"User-Agent": "SafeLinks/1.0"})
    wait_until(
        lambda: rows(session_factory) == [("SafeLinks/1.0", 5, "preferences", True)],
        timeout=10,
        interval=0.02,
        what="the page views written by the counter's thread",
    )


def test_a_clean_stop_writes_what_waits(
    app: Flask, client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    page = link(settings, LinkPurpose.UNSUBSCRIBE, contact_id)
    client.get(page, headers={"User-Agent": "SafeLinks/1.0"})
    client.get(page, headers={"User-Agent": "SafeLinks/1.0"})
    counter(app).close()
    assert rows(session_factory) == [("SafeLinks/1.0", 2, "unsubscribe", True)]


def _hit(agent: str) -> dict:
    hit = Hit(ip="192.0.2.1", user_agent=agent)
    return event_row(
        "web_hit", hit=hit, outcome="valid", fold=fold_key("t", agent), route="unsubscribe"
    )


def test_a_failed_write_keeps_the_hits_for_the_next_one(session_factory) -> None:
    hits = HitCounter(session_factory, every=3600)
    hits.add(_hit("A"))
    hits.add(_hit("A"))
    with session_scope(session_factory) as session:
        session.execute(text("ALTER TABLE events RENAME TO events_away"))
    try:
        with pytest.raises(Exception, match="events"):
            hits.flush()
        hits.add(_hit("A"))  # counted in with the two put back
        hits.add(_hit("B"))
        assert hits.waiting() == 4
    finally:
        with session_scope(session_factory) as session:
            session.execute(text("ALTER TABLE events_away RENAME TO events"))
    assert hits.flush() == 4
    assert sorted((ua, n) for ua, n, _, _ in rows(session_factory)) == [("A", 3), ("B", 1)]


def test_only_a_folding_hit_is_counted(session_factory) -> None:
    with pytest.raises(ValueError, match="folding"):
        HitCounter(session_factory).add(event_row("web_hit", outcome="valid"))
