"""Delivery rows: stopping the queued ones when an address's state changes."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import bindparam, func, select, union_all, update
from sqlalchemy.orm import Session

from dispatcher.campaigns import counts
from dispatcher.models import Campaign, Delivery, DeliveryStatus
from suppression.events import insert_rows, record_events, rows_params
from suppression.gate import Purpose, blocking_reason
from suppression.models import UTCDateTime, utcnow
from suppression.sql import core, inline_constants, run


def stop_queued(session: Session, address_id: int, *, then: Sequence[dict[str, Any]] = ()) -> int:
    """Cancel the queued (not yet claimed) deliveries to ``address_id`` that the gate now
    refuses; returns how many. The gate decides, so an unsubscribe stops marketing but not a
    queued service notice, while a postal request stops both.

    Passed to :func:`suppression.unsubscribe.unsubscribe_address` and called by staff
    suppressions, so the stop commits in the same transaction as the suppression.

    ``then``: audit events (``event_row`` values) written after the stop, in that order; an
    event whose detail has the key ``stopped`` gets the number stopped there. On PostgreSQL
    they are part of the stop's own statement (one round trip for all).
    """
    params = {"stop_address_id": address_id, "now": utcnow()}
    connection = core(session)
    if connection.dialect.name == "postgresql":
        counted = tuple(STOPPED if STOPPED in row["detail"] else None for row in then)
        if then:
            params.update(rows_params("t", then))
        return len(run(connection, _stop_in_one(counted), params))
    changes = counts.Changes()
    for statement in _stop_statements():
        for campaign_id, why in connection.execute(statement, params):
            changes.move(
                campaign_id,
                DeliveryStatus.QUEUED.value,
                DeliveryStatus.CANCELLED.value,
                reason_after=why,
            )
    counts.record(session, changes)
    stopped = sum(n for n in changes.values() if n > 0)
    if then:
        record_events(
            session,
            [
                {**row, "detail": {**row["detail"], STOPPED: stopped}}
                if STOPPED in row["detail"]
                else row
                for row in then
            ],
        )
    return stopped


# The detail key of a ``then`` event that gets the number of messages stopped.
STOPPED = "stopped"


@cache
def _stop_statements() -> tuple[Any, ...]:
    """One UPDATE per purpose, built once per process (building the gate's expression costs
    more than running it); the address and the time are bound per call."""
    statements = []
    for purpose in Purpose:
        reason = blocking_reason(Delivery.address_id, purpose)
        statements.append(
            update(Delivery)
            .where(
                Delivery.address_id == bindparam("stop_address_id"),
                Delivery.status == DeliveryStatus.QUEUED,
                Delivery.campaign_id.in_(select(Campaign.id).where(Campaign.purpose == purpose)),
                reason.is_not(None),
            )
            .values(
                status=DeliveryStatus.CANCELLED.value,
                skip_reason=reason,
                finished_at=bindparam("now", type_=UTCDateTime()),
            )
            .returning(Delivery.campaign_id, Delivery.skip_reason)
        )
    return tuple(inline_constants(s) for s in statements)


@cache
def _stop_in_one(counted_events: tuple[str | None, ...] = ()) -> Any:
    """PostgreSQL: :func:`_stop_statements`, their counters and the ``then`` events (their
    keys to count in, per :func:`suppression.events.insert_rows`) in one round trip. Its own
    statement, after the suppression's, so the gate sees the new suppression; the UPDATEs
    touch disjoint rows (campaigns of different purposes)."""
    stopped = [s.cte(f"stopped_{i}") for i, s in enumerate(_stop_statements())]
    moved = union_all(
        *(select(s.c.campaign_id, s.c.skip_reason.label("reason")) for s in stopped)
    ).cte("moved")
    counted = counts.moved_insert(
        moved,
        DeliveryStatus.QUEUED.value,
        DeliveryStatus.CANCELLED.value,
        bindparam("now", type_=UTCDateTime()),
    ).cte("counted")
    ctes = [counted]
    if counted_events:
        how_many = select(func.count()).select_from(moved).scalar_subquery()
        ctes.append(insert_rows("t", counted_events, how_many).cte("then_events"))
    return inline_constants(select(moved.c.campaign_id).add_cte(*ctes))
