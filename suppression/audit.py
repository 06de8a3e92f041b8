"""The audit trail made tamper-evident: events are sealed into a hash chain.

Writing an event stays one INSERT on the hot path (an unsubscribe must not wait on a global
lock). A sealing pass, run by beat and by ``dispatcher audit seal``, gives the events written
since the last pass the next sequence numbers, each with the SHA-256 of the previous link and
its own content. ``verify_chain`` recomputes the chain and names the first broken link: an
edited, deleted or re-ordered sealed event breaks it.

The IP and browser of an event are outside the chain on purpose: retention and erasure remove
them (the privacy policy's promise), and that must not look like tampering. So are a folded
page hit's ``count``, ``last_at`` and ``fold_key`` (``suppression/events.py``): they grow after
the row is written, while its window lasts, and may be sealed meanwhile.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from suppression.models import Event

GENESIS = "0" * 64
_LOCK_ID = 0x5EA1  # PostgreSQL advisory lock: one sealing pass at a time


def _content(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "occurred_at": event.occurred_at.isoformat(),
        "kind": event.kind,
        "address_id": event.address_id,
        "actor": event.actor,
        "outcome": event.outcome,
        "detail": event.detail,
    }


def link_hash(previous: str, seq: int, event: Event) -> str:
    body = json.dumps([previous, seq, _content(event)], sort_keys=True, default=str)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def seal_events(session: Session, *, limit: int = 50_000) -> int:
    """Seal up to ``limit`` unsealed events in id order; returns how many."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
    last = session.execute(
        select(Event.seal_seq, Event.chain_hash)
        .where(Event.seal_seq.is_not(None))
        .order_by(Event.seal_seq.desc())
        .limit(1)
    ).first()
    seq, previous = (last[0] or 0, last[1] or GENESIS) if last is not None else (0, GENESIS)
    pending = list(
        session.scalars(
            select(Event).where(Event.seal_seq.is_(None)).order_by(Event.id).limit(limit)
        )
    )
    for event in pending:
        seq += 1
        previous = link_hash(previous, seq, event)
        session.execute(
            update(Event)
            .where(Event.id == event.id)
            .values(seal_seq=seq, chain_hash=previous)
            .execution_options(synchronize_session=False)
        )
    return len(pending)


@dataclass(frozen=True)
class ChainReport:
    sealed: int
    unsealed: int
    # The first sequence number whose link does not hold, and the event there (if any).
    broken_at: int | None = None
    broken_event_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify_chain(session: Session) -> ChainReport:
    """Recompute the chain from the start; stop at the first link that does not hold."""
    unsealed = session.scalar(select(func.count()).where(Event.seal_seq.is_(None))) or 0
    previous, expected, sealed = GENESIS, 1, 0
    stmt = (
        select(Event)
        .where(Event.seal_seq.is_not(None))
        .order_by(Event.seal_seq)
        .execution_options(yield_per=5_000)
    )
    for event in session.scalars(stmt):
        if event.seal_seq != expected:
            return ChainReport(
                sealed, unsealed, expected, event.id, f"link {expected} is missing (deleted?)"
            )
        if link_hash(previous, expected, event) != event.chain_hash:
            return ChainReport(
                sealed, unsealed, expected, event.id, f"event {event.id} was changed after sealing"
            )
        previous = event.chain_hash
        expected += 1
        sealed += 1
    return ChainReport(sealed, unsealed)
