"""The web edge's shared counts on PostgreSQL, written by several app instances (as
several web processes would) at once: the upserts neither lose counts nor fail."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.models import WebFailure, WebHitTally
from dispatcher.sharing.affiliates import add_affiliate
from dispatcher.web import create_app, limits
from suppression.models import Event
from tests.support.backends import Backend, make_backend


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Backend]:
    with make_backend("postgres-rabbitmq", tmp_path / "var") as backend:
        yield backend


def test_concurrent_bad_hits_and_guesses_from_two_processes_are_counted_once_each(
    pg: Backend,
) -> None:
    engine = make_engine(pg.settings.database_url)
    sessions = make_sessionmaker(engine)
    try:
        with session_scope(sessions) as session:
            add_affiliate(
                session, "labelco", contact="ops@labelco.example", fields="email", actor="t"
            )
        workers: list[FlaskClient] = [
            create_app(pg.settings, trusted_proxies=1).test_client() for _ in range(2)
        ]

        def bad_link(i: int) -> int:
            headers = {"X-Forwarded-For": "198.51.100.7"}
            return workers[i % 2].get(f"/u/garbage-{i}", headers=headers).status_code

        def guess(i: int) -> int:
            headers = {"X-Forwarded-For": "203.0.113.4", "Authorization": "Bearer labelco.no"}
            return workers[i % 2].get("/affiliates/feed", headers=headers).status_code

        with ThreadPoolExecutor(max_workers=6) as pool:
            links = list(pool.map(bad_link, range(30)))
        # Two at a time: the hash runs one at a time per process, and more waiting callers
        # would (rightly) get 503 on a loaded machine.
        with ThreadPoolExecutor(max_workers=2) as pool:
            guesses = list(pool.map(guess, range(limits.PER_NETWORK.failures)))
        assert links == [400] * 30
        assert guesses == [401] * limits.PER_NETWORK.failures
        assert guess(0) == 429
        with session_scope(sessions) as session:
            tallied = session.scalar(
                select(func.sum(WebHitTally.count)).where(WebHitTally.route == "unsubscribe")
            )
            link_events = session.scalar(
                select(func.count()).select_from(Event).where(Event.kind == "web_hit")
            )
            failures = session.scalar(
                select(WebFailure.count).where(WebFailure.key == "ip:203.0.113.4")
            )
        assert tallied == 30
        assert link_events is not None and 1 <= link_events <= 2  # a minute may turn
        assert failures == limits.PER_NETWORK.failures
    finally:
        engine.dispose()
