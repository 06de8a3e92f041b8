"""The audit chain: an edited, deleted or inserted sealed event is found."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from suppression.audit import seal_events, verify_chain
from suppression.events import Hit, record_event
from suppression.models import Event


def write(factory: sessionmaker[Session], n: int, start: int = 0) -> None:
    with session_scope(factory) as session:
        for i in range(start, start + n):
            record_event(
                session, "staff_action", actor=f"s{i}", outcome="ok", n=i, hit=Hit(ip="192.0.2.1")
            )


def test_sealed_chain_verifies_and_names_the_first_edited_event(
    session_factory: sessionmaker[Session],
) -> None:
    write(session_factory, 5)
    with session_scope(session_factory) as session:
        assert seal_events(session) == 5
    write(session_factory, 3, start=5)
    with session_scope(session_factory) as session:
        report = verify_chain(session)
        assert report.ok and report.sealed == 5 and report.unsealed == 3
        assert seal_events(session) == 3
    with session_scope(session_factory) as session:
        assert verify_chain(session).ok
        # Retention and erasure remove IP and browser: not tampering.
        session.execute(update(Event).values(ip=None, user_agent=None))
    with session_scope(session_factory) as session:
        assert verify_chain(session).ok
        third = session.scalars(select(Event).where(Event.seal_seq == 3)).one()
        third.outcome = "refused"
    with session_scope(session_factory) as session:
        report = verify_chain(session)
        assert not report.ok and report.broken_at == 3 and report.broken_event_id == third.id


def test_a_deleted_event_breaks_the_chain(session_factory: sessionmaker[Session]) -> None:
    write(session_factory, 4)
    with session_scope(session_factory) as session:
        seal_events(session)
        session.execute(delete(Event).where(Event.seal_seq == 2))
    with session_scope(session_factory) as session:
        report = verify_chain(session)
        assert report.broken_at == 2 and "missing" in (report.problem or "")
