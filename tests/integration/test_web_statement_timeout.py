"""A web request's statement that runs for seconds does not hold a request thread.

The web app's PostgreSQL connections carry ``statement_timeout``
(``dispatcher.web.STATEMENT_TIMEOUT_MS``): a slow statement ends as a lost database does, a
page with 503 and a one-click spooled (202) and applied later, never half written. The
timeout is lowered here so that the tests wait for less; the slowness is real (a trigger
that sleeps, a lock another transaction holds with the lock timeout off, ``pg_sleep``).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

import dispatcher.web
from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.inbound import spool
from dispatcher.sharing.affiliates import add_affiliate
from dispatcher.sharing.export import export
from dispatcher.web import affiliates, create_app
from suppression.address import address_digest
from suppression.models import Suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.factories import make_contact
from tests.support.backends import Backend, make_backend
from tests.unit.dispatcher.sharing.test_affiliates import shareable, unsubscribe
from workers.process import wait_until

ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"
TIMEOUT_MS = 300


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with make_backend("postgres-rabbitmq", tmp_path_factory.mktemp("pg") / "var") as backend:
        yield backend


@pytest.fixture
def engine(pg: Backend) -> Iterator[Engine]:
    engine = make_engine(pg.settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def app(pg: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The web app with a statement timeout of :data:`TIMEOUT_MS`, and its own spool."""
    monkeypatch.setattr(dispatcher.web, "STATEMENT_TIMEOUT_MS", TIMEOUT_MS)
    app = create_app(pg.settings.replace(spool_dir=str(tmp_path / "spool")))
    yield app
    drainer = app.extensions.get("dispatcher.drainer")
    if drainer is not None:
        drainer.stop()
    app.extensions["dispatcher.hits"].close()
    app.extensions["dispatcher.sessions"].kw["bind"].dispose()


def suppressed(engine: Engine, address_id: int) -> list[str]:
    with session_scope(make_sessionmaker(engine)) as session:
        return list(
            session.scalars(select(Suppression.reason).where(Suppression.address_id == address_id))
        )


def test_a_one_click_whose_statement_runs_too_long_is_spooled_whole_and_applied_later(
    app: Flask, engine: Engine
) -> None:
    """The suppression's INSERT of this address sleeps (a trigger): the click is answered
    202 after the timeout with nothing written; once the INSERT is quick again the app's
    drainer applies it."""
    with session_scope(make_sessionmaker(engine)) as session:
        address_id = make_contact(session, "slow.statement@example.com").address_id
    token = TokenSigner(app.config["DISPATCHER_SETTINGS"].secret_keys).sign_link(
        LinkPurpose.UNSUBSCRIBE, address_id
    )
    with engine.begin() as ddl:
        ddl.execute(
            text(
                "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN PERFORM pg_sleep(120); RETURN NEW; END $$"
            )
        )
        ddl.execute(
            text(
                "CREATE TRIGGER slow_insert BEFORE INSERT ON suppressions FOR EACH ROW"
                f" WHEN (NEW.address_id = {int(address_id)}) EXECUTE FUNCTION slow_insert()"
            )
        )
    settings = app.config["DISPATCHER_SETTINGS"]
    try:
        with ThreadPoolExecutor(1) as pool:
            click = pool.submit(
                app.test_client().post, f"/u/{token}", data=ONE_CLICK, content_type=FORM
            )
            # Bounded, not timed: without the statement timeout the trigger's sleep outlasts
            # this wait.
            answer = click.result(timeout=60)
        assert answer.status_code == 202, answer.get_data(as_text=True)
        assert spool.pending(settings.spool) == 1
        assert suppressed(engine, address_id) == []
    finally:
        with engine.begin() as ddl:
            ddl.execute(text("DROP TRIGGER slow_insert ON suppressions"))
            ddl.execute(text("DROP FUNCTION slow_insert()"))
    wait_until(
        lambda: (
            suppressed(engine, address_id) == ["unsubscribe"] and spool.pending(settings.spool) == 0
        ),
        timeout=60,
        interval=0.2,
        what="the spooled one-click applied by the app's drainer",
    )


def test_a_page_whose_read_runs_too_long_answers_503(
    app: Flask, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the lock timeout off, the page's read waits on a table another transaction
    holds: the statement timeout alone ends it, and the page says to try again."""
    monkeypatch.setattr(dispatcher.web, "LOCK_TIMEOUT_MS", 0)
    app = create_app(app.config["DISPATCHER_SETTINGS"])
    with session_scope(make_sessionmaker(engine)) as session:
        address_id = make_contact(session, "slow.read@example.com").address_id
    token = TokenSigner(app.config["DISPATCHER_SETTINGS"].secret_keys).sign_link(
        LinkPurpose.UNSUBSCRIBE, address_id
    )
    try:
        with engine.connect() as holder, ThreadPoolExecutor(1) as pool:
            holder.execute(text("LOCK TABLE addresses IN ACCESS EXCLUSIVE MODE"))
            page = pool.submit(app.test_client().get, f"/u/{token}")
            try:
                answer = page.result(timeout=60)
            finally:
                holder.rollback()
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "60"
        assert "try again" in answer.get_data(as_text=True)
        # The same page once the table is free: the connection was kept and works.
        assert app.test_client().get(f"/u/{token}").status_code == 200
    finally:
        app.extensions["dispatcher.hits"].close()
        app.extensions["dispatcher.sessions"].kw["bind"].dispose()


def test_the_affiliates_feed_reads_a_whole_list_past_the_timeout(
    app: Flask, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed lifts the timeout for its own transaction: its reading of the list (made
    slow here by ``pg_sleep`` in the same transaction, as a list of millions is) answers
    200 with the digests; another request's statement of that length is still ended."""
    settings = app.config["DISPATCHER_SETTINGS"]
    sessions = make_sessionmaker(engine)
    with session_scope(sessions) as session:
        ann = shareable(session, "feed.ann@example.com")
        _, credential = add_affiliate(
            session, "slow-feed", contact="a@slow.example", fields="email", actor="t"
        )
    export(sessions, settings, "slow-feed", actor="staff")
    unsubscribe(settings, sessions, ann)
    feed = affiliates.feed

    def large_list(session: Session, *args: Any, **kwargs: Any) -> Any:
        session.execute(text("SELECT pg_sleep(:s)"), {"s": 2 * TIMEOUT_MS / 1000})
        return feed(session, *args, **kwargs)

    monkeypatch.setattr(affiliates, "feed", large_list)
    client = app.test_client()
    answer = client.get("/affiliates/feed", headers={"Authorization": f"Bearer {credential}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_data() == f"{address_digest('feed.ann@example.com')}\n".encode()
    # The lift was the feed's transaction's alone: the connection it ran on is back under
    # the timeout.
    app_engine = app.extensions["dispatcher.sessions"].kw["bind"]
    for _ in range(app_engine.pool.checkedin() + 1):
        with app_engine.connect() as connection:
            assert connection.scalar(text("SHOW statement_timeout")) == f"{TIMEOUT_MS}ms"
