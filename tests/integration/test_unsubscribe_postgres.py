"""The unsubscribe's rules on PostgreSQL, where its statements take their one-round-trip form
(data-modifying CTEs: the suppression with its event, the consent rule with its ledger row,
state and event, the stop of queued mail with its counters). SQLite, which the unit tests
use, keeps one statement per step, so the unit tests of these rules run here again on
PostgreSQL; the tests below add what only a real server shows: concurrent clicks.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from threading import Barrier

import pytest
from sqlalchemy import Engine, event, func, literal_column, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from dispatcher.campaigns import counts
from dispatcher.campaigns.deliveries import stop_queued
from dispatcher.db import (
    make_engine,
    make_sessionmaker,
    page_reads,
    session_scope,
)
from dispatcher.inbound import spool
from dispatcher.models import Contact, Delivery, DeliveryStatus
from dispatcher.web import create_app
from dispatcher.web.reads import read_link
from dispatcher.web.standing import STAFF_REASONS, standing
from suppression.consent import consent_history, record_consent
from suppression.models import Address, ConsentStatus, Event, Reason, Scope, Suppression, utcnow
from suppression.sql import run
from suppression.suppressions import Added, add_suppression, lift_suppressions
from suppression.tokens import BadToken, LinkPurpose, LinkSubject, TokenSigner
from suppression.unsubscribe import _address_held, resolve_unsubscribe_link, unsubscribe_address
from tests.factories import make_contact
from tests.support.backends import Backend, make_backend
from tests.support.pg import wait_until_blocked
from tests.unit.suppression.test_consent import (  # noqa: F401 - collected again, on PostgreSQL
    test_a_change_is_judged_against_its_own_scopes_state,
    test_a_recorded_change_names_who_and_how_and_refreshes_a_loaded_state,
    test_a_refused_opt_in_leaves_no_trace,
    test_an_older_change_does_not_override_a_newer_one,
    test_an_older_change_is_kept_as_history_without_an_event,
    test_an_opt_out_at_the_same_moment_as_the_opt_in_wins,
    test_an_undated_opt_in_gives_way_to_any_dated_change,
    test_latest_row_decides_and_history_is_kept,
    test_only_the_recipient_can_turn_an_opt_out_into_an_opt_in,
    test_repeating_the_current_status_adds_nothing,
    test_scopes_are_independent,
)
from tests.unit.suppression.test_unsubscribe import (  # noqa: F401 - collected again
    queue,
    test_every_record_of_an_unsubscribe_says_who_asked_how_and_from_which_campaign,
    test_resubscribe_lifts_only_the_recipients_own_unsubscribe,
    test_staff_passing_on_an_unsubscribe_are_named_with_their_note,
    test_staff_suppressions_block_resubscribe_and_nothing_changes,
    test_the_callers_audit_event_follows_the_unsubscribed_event,
    test_unsubscribe_suppresses_opts_out_stops_queued_mail_and_is_idempotent,
)
from workers.process import wait_until

ONE_CLICK = b"List-Unsubscribe=One-Click"


def queue_counted(session: Session, contact: Contact, purpose: str = "marketing") -> Delivery:
    """A queued delivery of a new sending campaign, with its counter (as fan-out writes it)."""
    delivery = queue(session, contact, purpose)
    changes = counts.Changes()
    changes.add(delivery.campaign_id, DeliveryStatus.QUEUED.value, 1)
    counts.record(session, changes)
    return delivery


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with make_backend("postgres-rabbitmq", tmp_path_factory.mktemp("pg") / "var") as backend:
        yield backend


@pytest.fixture(scope="module")
def pg_engine(pg: Backend) -> Iterator[Engine]:
    engine = make_engine(pg.settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(pg_engine: Engine) -> Iterator[Session]:
    """The unit tests' fixture, on PostgreSQL: the test's work is rolled back."""
    with make_sessionmaker(pg_engine)() as session:
        session.begin()
        yield session
        session.rollback()


def test_the_unsubscribe_runs_in_fewer_statements_on_postgresql(session: Session) -> None:
    contact = make_contact(session, "few@example.com")
    queue(session, contact)
    address = session.get(Address, contact.address_id)
    assert address is not None
    seen: list[str] = []
    connection = session.connection()

    def count(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001
        seen.append(statement)

    event.listen(connection, "before_cursor_execute", count)
    try:
        first = unsubscribe_address(session, address, stop_queued=stop_queued, source="one_click")
        statements_first = len(seen)
        seen.clear()
        again = unsubscribe_address(session, address, stop_queued=stop_queued, source="one_click")
    finally:
        event.remove(connection, "before_cursor_execute", count)
    assert first.newly_suppressed and first.stopped == 1
    assert not again.newly_suppressed and again.stopped == 0
    # suppression + event; consent rule + ledger + state + event; stop + counters + event
    assert statements_first == 3
    assert len(seen) == 3
    events = session.scalars(
        select(Event).where(Event.address_id == address.id).order_by(Event.id)
    ).all()[-4:]  # after the contact's own opt-in
    assert [(e.kind, e.outcome) for e in events] == [
        ("suppression_added", "unsubscribe"),
        ("consent_changed", "opted_out"),
        ("unsubscribed", "suppressed"),
        ("unsubscribed", "already_suppressed"),
    ]
    # The stop's own statement counted what it stopped into the event it wrote.
    assert [e.detail["stopped"] for e in events[2:]] == [1, 0]
    assert events[2].detail["source"] == "one_click"


def counting_statements(session: Session) -> list[str]:
    """The statements the session's connection runs from now on (until the test ends)."""
    seen: list[str] = []
    event.listen(session.connection(), "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_a_repeated_click_is_held_and_still_stops_mail_queued_since(pg: Backend) -> None:
    """A click on an address already unsubscribed is recognised by the link's read, which
    locks the suppression and the opt-out: one more statement stops mail queued since the
    first click (with its counters) and writes the event; no second suppression, no second
    opt-out in the ledger."""
    engine = make_engine(pg.settings.database_url)
    sessions = make_sessionmaker(engine)
    signer = TokenSigner(pg.settings.secret_keys)
    try:
        with session_scope(sessions) as session:
            contact = make_contact(session, "held@example.com")
            token = signer.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id, 5)
            subject, address, held = resolve_unsubscribe_link(session, signer, token)
            assert held is None
            first = unsubscribe_address(session, address, stop_queued=stop_queued, source="t")
        with session_scope(sessions) as session:
            since = queue_counted(session, contact)  # queued after the first click
        with session_scope(sessions) as session:
            seen = counting_statements(session)
            subject, address, held = resolve_unsubscribe_link(session, signer, token)
            assert held is not None and held.suppression_id == first.suppression_id
            again = unsubscribe_address(
                session,
                address,
                stop_queued=stop_queued,
                source="t",
                campaign_id=subject.campaign_id,
                held=held,
            )
            assert len(seen) == 2  # the link's read; the stop, its counters and the event
        assert (again.newly_suppressed, again.stopped) == (False, 1)
        assert again.suppression_id == first.suppression_id
        with session_scope(sessions) as session:
            delivery = session.get(Delivery, since.id)
            assert delivery is not None
            assert (delivery.status, delivery.skip_reason) == ("cancelled", "unsubscribe")
            assert counts.verify(session, [since.campaign_id]) == []
            assert [c.status for c in consent_history(session, address.id)] == [
                "opted_in",
                "opted_out",
            ]
            assert (
                session.scalar(
                    select(func.count())
                    .select_from(Suppression)
                    .where(Suppression.address_id == address.id)
                )
                == 1
            )
            last = session.scalars(
                select(Event).where(Event.address_id == address.id).order_by(Event.id.desc())
            ).first()
            assert last is not None
            assert (last.kind, last.outcome, last.detail["stopped"]) == (
                "unsubscribed",
                "already_suppressed",
                1,
            )
    finally:
        engine.dispose()


def test_a_held_click_keeps_a_lift_and_an_opt_in_waiting_until_it_commits(pg: Backend) -> None:
    """Nothing can lift what a held click relies on before it commits: staff's lift and a
    change of the consent state wait for its transaction (here: give up after their lock
    timeout), and go through once it has committed."""
    engine = make_engine(pg.settings.database_url)
    sessions = make_sessionmaker(engine)
    signer = TokenSigner(pg.settings.secret_keys)
    lift = text("UPDATE suppressions SET lifted_at = now() WHERE address_id = :a")
    opt_in = text("UPDATE consent_states SET status = 'opted_in' WHERE address_id = :a")
    try:
        with session_scope(sessions) as session:
            contact = make_contact(session, "lock@example.com")
            token = signer.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id)
            _subject, address, _held = resolve_unsubscribe_link(session, signer, token)
            unsubscribe_address(session, address, stop_queued=stop_queued, source="t")
        clicking = sessions()
        clicking.begin()
        _subject, address, held = resolve_unsubscribe_link(clicking, signer, token)
        assert held is not None
        with engine.connect() as other:
            for change in (lift, opt_in):
                other.execute(text("SET LOCAL lock_timeout = '200ms'"))
                with pytest.raises(OperationalError, match="lock timeout"):
                    other.execute(change, {"a": address.id})
                other.rollback()
            unsubscribe_address(clicking, address, stop_queued=stop_queued, source="t", held=held)
            clicking.commit()
            clicking.close()
            other.execute(text("SET LOCAL lock_timeout = '5s'"))
            assert other.execute(lift, {"a": address.id}).rowcount == 1
            other.rollback()
    finally:
        engine.dispose()


def test_a_hold_is_not_taken_without_the_opt_out_nor_used_in_another_transaction(
    pg: Backend,
) -> None:
    """An address with the unsubscribe suppression but still opted in (staff added the
    suppression alone) is not a repeat: the click writes the opt-out. A hold from a
    transaction that has ended is not used: the unsubscribe runs in full."""
    engine = make_engine(pg.settings.database_url)
    sessions = make_sessionmaker(engine)
    signer = TokenSigner(pg.settings.secret_keys)
    try:
        with session_scope(sessions) as session:
            contact = make_contact(session, "half@example.com")
            add_suppression(
                session,
                contact.address_id,
                scope="marketing",
                reason=Reason.UNSUBSCRIBE,
                source="staff",
            )
            token = signer.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id)
        with session_scope(sessions) as session:
            _subject, address, held = resolve_unsubscribe_link(session, signer, token)
            assert held is None
            unsubscribe_address(session, address, stop_queued=stop_queued, source="t")
        with session_scope(sessions) as session:
            assert [c.status for c in consent_history(session, address.id)] == [
                "opted_in",
                "opted_out",
            ]
            _subject, address, old = resolve_unsubscribe_link(session, signer, token)
            assert old is not None
        with session_scope(sessions) as session:
            seen = counting_statements(session)
            unsubscribe_address(session, address, stop_queued=stop_queued, source="t", held=old)
            assert len(seen) == 3  # suppression, consent, stop: the full unsubscribe
    finally:
        engine.dispose()


def test_concurrent_one_clicks_apply_the_unsubscribe_exactly_once(pg: Backend) -> None:
    """Eight one-click POSTs of one link at once, through two app instances (two worker
    processes): one suppression, one opt-out in the ledger, the queued mail stopped once and
    the counters moved once, one ``suppression_added`` event; every POST answered 200."""
    engine = make_engine(pg.settings.database_url)
    sessions = make_sessionmaker(engine)
    try:
        with session_scope(sessions) as session:
            contact = make_contact(session, "race@example.com")
            delivery = queue_counted(session, contact)
            address_id, campaign_id = contact.address_id, delivery.campaign_id
        token = TokenSigner(pg.settings.secret_keys).sign_link(
            LinkPurpose.UNSUBSCRIBE, address_id, campaign_id
        )
        apps = [create_app(pg.settings).test_client() for _ in range(2)]
        start = Barrier(8)

        def click(i: int) -> int:
            start.wait(timeout=30)
            response = apps[i % 2].post(
                f"/u/{token}", data=ONE_CLICK, content_type="application/x-www-form-urlencoded"
            )
            return response.status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(click, range(8)))
        assert codes == [200] * 8
        with session_scope(sessions) as session:
            suppressions = session.scalar(
                select(func.count())
                .select_from(Suppression)
                .where(Suppression.address_id == address_id)
            )
            assert suppressions == 1
            ledger = [c.status for c in consent_history(session, address_id)]
            assert ledger == ["opted_in", "opted_out"]  # make_contact's opt-in, then one
            kinds = session.execute(
                select(Event.kind, Event.outcome)
                .where(Event.address_id == address_id)
                .order_by(Event.id)
            ).all()
            assert kinds.count(("suppression_added", "unsubscribe")) == 1
            assert kinds.count(("consent_changed", "opted_out")) == 1
            assert kinds.count(("unsubscribed", "suppressed")) == 1
            assert kinds.count(("unsubscribed", "already_suppressed")) == 7
            row = session.get(Delivery, delivery.id)
            assert row is not None
            assert (row.status, row.skip_reason) == (DeliveryStatus.CANCELLED.value, "unsubscribe")
            found = counts.current(session, [campaign_id])[campaign_id]
            assert found.by_status["queued"] == 0
            assert found.by_status["cancelled"] == 1
            assert found.by_reason == {"unsubscribe": 1}
            assert counts.verify(session, [campaign_id]) == []
    finally:
        engine.dispose()


def test_stopping_queued_mail_asks_the_gate_after_the_suppression(pg: Backend) -> None:
    """The stop is a statement after the suppression's (it sees the new row): a marketing
    delivery is cancelled, a queued service notice to the same address is not."""
    engine = make_engine(pg.settings.database_url)
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            contact = make_contact(session, "notice@example.com")
            marketing = queue_counted(session, contact)
            notice = queue_counted(session, contact, "service_notice")
            address = session.get(Address, contact.address_id)
            assert address is not None
            result = unsubscribe_address(
                session, address, stop_queued=stop_queued, source="one_click"
            )
            assert result.stopped == 1
            statuses = dict(
                session.execute(
                    select(Delivery.id, Delivery.status).where(
                        Delivery.id.in_([marketing.id, notice.id])
                    )
                ).all()
            )
            assert statuses == {marketing.id: "cancelled", notice.id: "queued"}
            assert counts.verify(session, [marketing.campaign_id, notice.campaign_id]) == []
            session.rollback()
    finally:
        engine.dispose()


def test_a_suppression_met_mid_statement_is_read_again_not_added_twice(pg: Backend) -> None:
    """Two unsubscribes of one address: the second's INSERT waits for the first's row, which
    commits after the second statement's snapshot was taken, so the row it met is invisible
    to that statement. The second is answered with the first's row, adds nothing, and
    writes no ``suppression_added`` event."""
    engine = make_engine(pg.settings.database_url)
    sessions = make_sessionmaker(engine)
    try:
        with session_scope(sessions) as session:
            address_id = make_contact(session, "met@example.com").address_id
        first = sessions()
        first.begin()
        made = add_suppression(
            first, address_id, scope="marketing", reason=Reason.UNSUBSCRIBE, source="one_click"
        )
        assert made.created
        first_pid = first.scalar(text("SELECT pg_backend_pid()"))

        def second() -> Added:
            with session_scope(sessions) as session:
                return add_suppression(
                    session,
                    address_id,
                    scope="marketing",
                    reason=Reason.UNSUBSCRIBE,
                    source="one_click",
                )

        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(second)
            # Until the second INSERT is blocked by the first transaction's row.
            wait_until_blocked(engine, first_pid, waiting, "the second never waited for the first")
            first.commit()
            first.close()
            met = waiting.result(timeout=30)
        assert met == Added(made.suppression_id, created=False)
        with session_scope(sessions) as session:
            events = session.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.address_id == address_id, Event.kind == "suppression_added")
            )
            assert events == 1
    finally:
        engine.dispose()


def test_a_page_read_hands_back_a_transactional_connection_even_when_its_page_fails(
    pg_engine: Engine,
) -> None:
    """The link pages read on the pool's DBAPI connection in autocommit
    (``dispatcher.db.page_reads``); however the page ends (here: its link names an address
    that is gone), the connection must come back transactional."""
    pool_of_one = make_engine(
        pg_engine.url.render_as_string(hide_password=False), pool_size=1, max_overflow=0
    )
    sessions = make_sessionmaker(pg_engine)
    try:
        with pytest.raises(BadToken), page_reads(pool_of_one) as reads:
            read_link(reads, LinkSubject(999_999_999, None))
        one = make_sessionmaker(pool_of_one)
        with session_scope(one) as session:
            session.execute(text("CREATE TABLE IF NOT EXISTS page_probe (x int)"))
        with pytest.raises(RuntimeError), session_scope(one) as session:
            session.execute(text("INSERT INTO page_probe VALUES (2)"))
            raise RuntimeError("the unsubscribe failed half-way")
        with session_scope(sessions) as session:
            assert session.scalars(text("SELECT x FROM page_probe")).all() == []
            session.execute(text("DROP TABLE page_probe"))
    finally:
        pool_of_one.dispose()


def test_a_page_reads_what_a_session_reads_on_postgresql(pg: Backend, pg_engine: Engine) -> None:
    from tests.unit.dispatcher.web.test_reads import both_ways

    sessions = make_sessionmaker(pg_engine)
    with session_scope(sessions) as session:
        address_id = make_contact(session, "page.reads.pg@example.com").address_id
        add_suppression(session, address_id, scope="global", reason=Reason.COMPLAINT, source="t")
    through_session, direct = both_ways(pg_engine, sessions, LinkSubject(address_id, None))
    assert direct == through_session
    assert direct[1].stopped is not None and direct[1].stopped.since.tzinfo is not None


def test_the_preference_page_reads_the_gate_and_the_suppressions_in_one_statement(
    session: Session,
) -> None:
    contact = make_contact(session, "standing@example.com")
    address_id = contact.address_id
    clear = standing(session, address_id)
    assert (clear.receives_marketing, clear.stopped, clear.sharing_suppressed) == (
        True,
        None,
        False,
    )
    for reason in (Reason.UNSUBSCRIBE, Reason.COMPLAINT):
        add_suppression(session, address_id, scope="marketing", reason=reason, source="test")
    stopped = standing(session, address_id)
    assert not stopped.receives_marketing
    assert stopped.receives_service_notices is False  # a complaint stops service notices too
    assert stopped.stopped is not None
    assert stopped.stopped.why == STAFF_REASONS["complaint"]
    assert stopped.sharing_suppressed


def test_a_connection_the_server_ended_is_replaced_before_the_next_request(pg: Backend) -> None:
    """No ping per request, yet a pooled connection whose backend was terminated while idle
    (``pg_terminate_backend``, as a restart does) is found dead before use: the next one-click
    is answered 200 and applied, not spooled, and the next page is served."""
    engine = make_engine(pg.settings.database_url)
    signer = TokenSigner(pg.settings.secret_keys)
    app = create_app(pg.settings)
    app_engine = app.extensions["dispatcher.sessions"].kw["bind"]
    backends: list[int] = []
    event.listen(
        app_engine, "connect", lambda dbapi, _record: backends.append(dbapi.info.backend_pid)
    )
    client = app.test_client()
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            ids = [make_contact(session, f"ended{i}@example.com").address_id for i in range(2)]
        first, second = (signer.sign_link(LinkPurpose.UNSUBSCRIBE, i) for i in ids)
        assert client.get(f"/u/{first}").status_code == 200
        assert backends
        with engine.connect() as admin:
            ended = (
                admin.execute(
                    text("SELECT pg_terminate_backend(pid, 10000) FROM unnest(:pids) AS pid"),
                    {"pids": list(backends)},
                )
                .scalars()
                .all()
            )
        assert ended and all(ended)  # returned once each backend had exited
        answer = client.post(
            f"/u/{second}", data=ONE_CLICK, content_type="application/x-www-form-urlencoded"
        )
        assert answer.status_code == 200
        assert client.get(f"/u/{first}").status_code == 200
        with session_scope(make_sessionmaker(engine)) as session:
            assert [
                s.reason
                for s in session.scalars(
                    select(Suppression).where(Suppression.address_id == ids[1])
                )
            ] == ["unsubscribe"]
    finally:
        app.extensions["dispatcher.hits"].close()  # its page views, before the database goes
        app_engine.dispose()
        engine.dispose()


def test_only_a_connection_in_doubt_is_pinged(pg: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection back from use moments ago is used without a ping; one idle longer than
    the limit is pinged first."""
    engine = make_engine(pg.settings.database_url, pool_size=1, max_overflow=0)
    pings: list[object] = []
    real_ping = engine.dialect.do_ping

    def counting_ping(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counting_ping)
    try:
        for _ in range(3):
            with engine.connect() as connection:
                assert connection.scalar(text("SELECT 1")) == 1
        assert pings == []
        monkeypatch.setattr("dispatcher.db.PING_AFTER_IDLE_SECONDS", 0.0)
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT 1")) == 1
        assert len(pings) == 1
    finally:
        engine.dispose()


def test_the_one_clicks_stop_statement_stays_short_enough_for_psycopg_to_keep_parsed() -> None:
    """psycopg keeps its parsed form of a statement only under 4 KB of SQL and 50 parameters;
    a one-click's stop, counters and two events is one statement that should stay under both
    (over them it is parsed again on every request)."""
    from psycopg import _queries
    from sqlalchemy.dialects.postgresql import psycopg as pg_dialect

    from dispatcher.campaigns.deliveries import _stop_in_one

    compiled = _stop_in_one(("stopped", None)).compile(dialect=pg_dialect.dialect())
    assert len(str(compiled).encode()) < _queries.MAX_CACHED_STATEMENT_LENGTH
    assert len(compiled.params) < _queries.MAX_CACHED_STATEMENT_PARAMS


def test_a_statement_run_on_the_driver_reads_and_fails_as_through_sqlalchemy(
    session: Session,
) -> None:
    """``suppression.sql.run`` (the unsubscribe's statements on the DBAPI cursor): typed
    parameters in, typed columns out, the same rows as ``connection.execute``; a driver's
    error comes out as SQLAlchemy's own (a lost database is what the spool catches)."""
    contact = make_contact(session, "driver.run@example.com")
    connection = session.connection()
    statement = _address_held()
    params = {"l_address_id": contact.address_id, "l_now": utcnow()}
    assert run(connection, statement, params) == [
        tuple(row) for row in connection.execute(statement, params)
    ]
    [(_id, address, created_at, suppression_id, repeats)] = run(connection, statement, params)
    assert (address, suppression_id, repeats) == ("driver.run@example.com", None, False)
    assert created_at.tzinfo is not None
    with pytest.raises(DBAPIError), session.begin_nested():
        # session.connection(): the savepoint is set when the nested transaction is used.
        run(session.connection(), select(literal_column("1") / literal_column("0")), {})
    assert run(connection, statement, params)[0][0] == contact.address_id  # still usable


def click(session: Session, signer: TokenSigner, address_id: int) -> tuple[bool, bool]:
    """A one-click unsubscribe of ``address_id`` as the link's route runs it: whether the
    link's read held it as a repeat, and whether the click suppressed the address anew."""
    token = signer.sign_link(LinkPurpose.UNSUBSCRIBE, address_id)
    _subject, address, held = resolve_unsubscribe_link(session, signer, token)
    result = unsubscribe_address(
        session, address, stop_queued=stop_queued, source="one_click", held=held
    )
    return held is not None, result.newly_suppressed


def active_unsubscribes(session: Session, address_id: int) -> list[str]:
    """The scopes of the address's active ``unsubscribe`` suppressions."""
    return sorted(
        session.scalars(
            select(Suppression.scope).where(
                Suppression.address_id == address_id,
                Suppression.reason == Reason.UNSUBSCRIBE.value,
                Suppression.lifted_at.is_(None),
            )
        )
    )


def test_a_click_after_staff_lifted_the_unsubscribe_suppresses_again(
    session: Session, pg: Backend
) -> None:
    """Staff lifted the unsubscribe suppression; the consent state is still the opt-out. A new
    click is not a repeat: it adds a new active suppression (the lifted one stays lifted)."""
    signer = TokenSigner(pg.settings.secret_keys)
    contact = make_contact(session, "lifted@example.com")
    assert click(session, signer, contact.address_id) == (False, True)
    assert click(session, signer, contact.address_id) == (True, False)
    lift_suppressions(session, contact.address_id, why="asked by phone", actor="staff")
    assert active_unsubscribes(session, contact.address_id) == []
    assert click(session, signer, contact.address_id) == (False, True)
    assert active_unsubscribes(session, contact.address_id) == ["marketing"]
    total = select(func.count()).where(Suppression.address_id == contact.address_id)
    assert session.scalar(total) == 2


@pytest.mark.parametrize(
    ("scope", "reason"),
    [
        ("marketing", Reason.MANUAL),
        ("marketing", Reason.COMPLAINT),
        ("global", Reason.UNSUBSCRIBE),
        ("affiliates", Reason.UNSUBSCRIBE),
    ],
)
def test_only_the_marketing_unsubscribe_suppression_makes_a_click_a_repeat(
    session: Session, pg: Backend, scope: str, reason: Reason
) -> None:
    """Opted out of marketing and suppressed, but not by a marketing ``unsubscribe``
    suppression: the click is not a repeat and adds that suppression."""
    signer = TokenSigner(pg.settings.secret_keys)
    contact = make_contact(
        session,
        f"{scope}-{reason}@example.com",
        marketing=ConsentStatus.OPTED_OUT,
        suppressed=reason,
        suppression_scope=scope,
    )
    assert click(session, signer, contact.address_id) == (False, True)
    expected = sorted({"marketing", scope} if reason is Reason.UNSUBSCRIBE else {"marketing"})
    assert active_unsubscribes(session, contact.address_id) == expected


def test_only_the_marketing_opt_out_makes_a_click_a_repeat(session: Session, pg: Backend) -> None:
    """Suppressed for marketing by an unsubscribe, opted out of affiliates only: the click is
    not a repeat and writes the marketing opt-out."""
    signer = TokenSigner(pg.settings.secret_keys)
    contact = make_contact(
        session,
        "affiliates-out@example.com",
        affiliates=ConsentStatus.OPTED_OUT,
        suppressed=Reason.UNSUBSCRIBE,
    )
    assert click(session, signer, contact.address_id) == (False, False)
    history = consent_history(session, contact.address_id)
    assert [c.status for c in history if c.scope == "marketing"] == ["opted_in", "opted_out"]


def test_another_addresss_unsubscribe_does_not_make_a_click_a_repeat(
    session: Session, pg: Backend
) -> None:
    signer = TokenSigner(pg.settings.secret_keys)
    other = make_contact(session, "first-out@example.com")
    assert click(session, signer, other.address_id) == (False, True)
    contact = make_contact(session, "still-in@example.com")
    assert click(session, signer, contact.address_id) == (False, True)
    assert active_unsubscribes(session, contact.address_id) == ["marketing"]


def test_a_click_older_than_the_opt_out_state_is_not_a_repeat(
    session: Session, pg: Backend
) -> None:
    """The state is an opt-out dated after the click (a sender's clock ahead): an opt-out now
    is history by the consent rule, not a repeat of the state, so the link's read does not
    hold it and the unsubscribe runs in full (the click's opt-out goes into the ledger)."""
    signer = TokenSigner(pg.settings.secret_keys)
    contact = make_contact(session, "ahead@example.com", suppressed=Reason.UNSUBSCRIBE)
    ahead = utcnow() + timedelta(hours=1)
    record_consent(
        session,
        contact.address_id,
        Scope.MARKETING,
        ConsentStatus.OPTED_OUT,
        source="import",
        occurred_at=ahead,
    )
    assert click(session, signer, contact.address_id) == (False, False)
    history = consent_history(session, contact.address_id)
    assert [c.status for c in history] == ["opted_in", "opted_out", "opted_out"]
    assert history[-1].occurred_at == ahead


def test_repeated_clicks_hold_the_address_together(pg: Backend, pg_engine: Engine) -> None:
    """Two repeated clicks of one link at once both hold the suppression and the opt-out
    (shared locks): the second's read does not wait for the first's transaction."""
    sessions = make_sessionmaker(pg_engine)
    signer = TokenSigner(pg.settings.secret_keys)
    with session_scope(sessions) as session:
        contact = make_contact(session, "together@example.com")
        assert click(session, signer, contact.address_id) == (False, True)
    token = signer.sign_link(LinkPurpose.UNSUBSCRIBE, contact.address_id)
    with sessions() as first, sessions() as second:
        first.begin()
        assert resolve_unsubscribe_link(first, signer, token)[2] is not None
        second.begin()
        second.execute(text("SET LOCAL lock_timeout = '2s'"))
        assert resolve_unsubscribe_link(second, signer, token)[2] is not None
        second.rollback()
        first.rollback()


def test_a_one_click_that_would_wait_on_a_held_row_is_spooled_and_applied_when_it_is_free(
    pg: Backend, pg_engine: Engine, tmp_path: Path
) -> None:
    """A staff cancel of a large campaign holds its queued rows for as long as its one
    UPDATE takes. A one-click whose stop meets such a row does not hold a request thread for
    all that time: after the web's lock timeout it is answered 202 and spooled, with nothing
    of it written (one transaction); once the row is free the app's drainer applies it: the
    suppression, and the queued mail stopped."""
    sessions = make_sessionmaker(pg_engine)
    with session_scope(sessions) as session:
        contact = make_contact(session, "held.row@example.com")
        delivery = queue_counted(session, contact)
        address_id, delivery_id = contact.address_id, delivery.id
        token = TokenSigner(pg.settings.secret_keys).sign_link(
            LinkPurpose.UNSUBSCRIBE, address_id, delivery.campaign_id
        )
    settings = pg.settings.replace(spool_dir=str(tmp_path / "spool"))
    app = create_app(settings)
    client = app.test_client()

    def suppressed() -> list[str]:
        with session_scope(sessions) as session:
            return list(
                session.scalars(
                    select(Suppression.reason).where(Suppression.address_id == address_id)
                )
            )

    with pg_engine.connect() as staff, ThreadPoolExecutor(1) as pool:
        staff.execute(
            text("UPDATE deliveries SET skip_reason = 'cancelling' WHERE id = :d"),
            {"d": delivery_id},
        )  # the row is held until this transaction ends
        click = pool.submit(
            client.post,
            f"/u/{token}",
            data=ONE_CLICK,
            content_type="application/x-www-form-urlencoded",
        )
        try:
            # Bounded, not timed: without the lock timeout the click waits for the staff
            # transaction, which ends only after this wait has failed.
            answer = click.result(timeout=60)
            assert answer.status_code == 202, answer.get_data(as_text=True)
            assert spool.pending(settings.spool) == 1
            assert suppressed() == []
        finally:
            staff.rollback()
        click.result(timeout=60)
    wait_until(
        lambda: suppressed() == ["unsubscribe"] and spool.pending(settings.spool) == 0,
        timeout=60,
        interval=0.2,
        what="the spooled one-click applied by the app's drainer",
    )
    with session_scope(sessions) as session:
        status = session.scalar(select(Delivery.status).where(Delivery.id == delivery_id))
    assert status == DeliveryStatus.CANCELLED
    app.extensions["dispatcher.drainer"].stop()
    app.extensions["dispatcher.hits"].close()
    app.extensions["dispatcher.sessions"].kw["bind"].dispose()
