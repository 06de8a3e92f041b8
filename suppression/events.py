"""The audit trail: one function writes it.

A page that link scanners fetch (the unsubscribe and preference pages) can be hit thousands
of times a minute during a send. Such hits *fold*: the caller names the act, who did it and
the time window (:func:`fold_key`), and a repeat within the window raises the first row's
``count`` and ``last_at`` instead of adding a row, so a scanner fetching one link fifty
times is one row that still says who (IP, browser), first seen (``occurred_at``), last seen
and how often.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, literal, null, select, union_all
from sqlalchemy import cast as cast_sql
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from suppression.models import Event, utcnow
from suppression.sql import core, dialect_name, inline_constants, insert_on

# Repeats of one act by one caller within this many seconds fold into one row.
FOLD_WINDOW_SECONDS = 600

_EVENTS = cast(Table, Event.__table__)


@dataclass(frozen=True)
class Hit:
    """Who touched a recipient-facing endpoint, as the security log records it."""

    ip: str | None = None
    user_agent: str | None = None
    source: str = "web"


def fold_key(*parts: object, at: datetime | None = None) -> str:
    """The key repeats of one act fold under: ``parts`` (what, which link, IP, browser) in
    the :data:`FOLD_WINDOW_SECONDS` window that holds ``at`` (now)."""
    window = int((at or utcnow()).timestamp()) // FOLD_WINDOW_SECONDS
    text = "\0".join(str(p) for p in (window, *parts))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# The columns an event is written with, in this order (``event_row`` gives their values).
ROW_COLUMNS = (
    "occurred_at",
    "kind",
    "address_id",
    "actor",
    "ip",
    "user_agent",
    "outcome",
    "detail",
    "count",
    "fold_key",
)


def event_row(
    kind: str,
    *,
    address_id: int | None = None,
    actor: str | None = None,
    hit: Hit | None = None,
    outcome: str | None = None,
    fold: str | None = None,
    **detail: Any,
) -> dict[str, Any]:
    """The values of one audit event, by column (see :func:`record_event`)."""
    return {
        "occurred_at": utcnow(),
        "kind": kind,
        "address_id": address_id,
        "actor": actor,
        "ip": hit.ip if hit else None,
        "user_agent": (hit.user_agent or "")[:512] if hit else None,
        "outcome": outcome,
        "detail": detail,
        "count": 1,
        "fold_key": fold,
    }


def record_event(
    session: Session,
    kind: str,
    *,
    address_id: int | None = None,
    actor: str | None = None,
    hit: Hit | None = None,
    outcome: str | None = None,
    fold: str | None = None,
    **detail: Any,
) -> int:
    """Write an audit event in the caller's transaction (committed with the change it
    describes); returns how many times it has happened (1 unless it folded).

    With ``fold`` (a :func:`fold_key`), a repeat of the same key raises that row's count and
    last-seen time instead of adding a row.
    """
    row = event_row(
        kind, address_id=address_id, actor=actor, hit=hit, outcome=outcome, fold=fold, **detail
    )
    if fold is None:
        core(session).execute(_plain_insert(), row)
        return 1
    return int(core(session).execute(_folding_insert(dialect_name(session)), row).scalar_one())


def counted_row(row: dict[str, Any], times: int, last_at: datetime | None) -> dict[str, Any]:
    """``row`` (:func:`event_row` values of a folding event, first seen) as seen ``times``
    times, last at ``last_at``: what :func:`record_counted` writes."""
    if row["fold_key"] is None:
        raise ValueError("only a folding event is counted")
    return {**row, "count": times, "last_at": last_at if times > 1 else None}


def record_counted(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Write folding events counted by the caller (:func:`counted_row` values, one per fold
    key) in the caller's transaction: a new key is a row with its count, a key already
    written raises that row's count by the row's and moves its last-seen time. On
    PostgreSQL one statement."""
    if rows:
        core(session).execute(_counted_insert(dialect_name(session)), list(rows))


def record_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Write audit events (:func:`event_row` values, none folding) in the caller's
    transaction, in the order given: on PostgreSQL as one INSERT (one round trip)."""
    connection = core(session)
    if connection.dialect.name != "postgresql" or len(rows) < 2:
        for row in rows:
            connection.execute(_plain_insert(), row)
        return
    connection.execute(_rows_insert(len(rows)), rows_params("e", rows))


def rows_params(prefix: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The parameters of :func:`insert_rows` for ``rows`` (:func:`event_row` values)."""
    params = {}
    for i, row in enumerate(rows):
        if row["fold_key"] is not None:
            raise ValueError("an event written with others does not fold")
        params.update({f"{prefix}{i}_{k}": v for k, v in row.items() if k not in _NOT_BOUND})
    return params


_NOT_BOUND = frozenset(("count", "fold_key"))  # bound_event writes them as constants


def insert_rows(prefix: str, counted: tuple[str | None, ...], count: Any = None) -> Any:
    """PostgreSQL: one INSERT of ``len(counted)`` events, bound as :func:`rows_params` names
    them, their ids in that order. Where ``counted[i]`` names a key, the event's detail gets
    that key set to the SQL ``count``: a statement that acts and writes its event in the same
    round trip (the queued messages an unsubscribe stopped) counts there what it did."""
    selects = []
    for i, key in enumerate(counted):
        given = {}
        if key is not None:
            detail = bindparam(f"{prefix}{i}_detail", type_=postgresql.JSONB())
            merged = detail.op("||")(func.jsonb_build_object(key, count))
            given["detail"] = cast_sql(merged, postgresql.JSON())  # as the other rows
        selects.append(bound_event(f"{prefix}{i}", **given))
    return insert_events(union_all(*selects) if len(selects) > 1 else selects[0])


@cache
def _rows_insert(n: int) -> Any:
    """``n`` events as one INSERT … SELECT … UNION ALL …: rows, and so ids, in that order."""
    return insert_rows("e", (None,) * n)


def bound_event(prefix: str, **given: Any) -> Any:
    """A SELECT of one event's values (:data:`ROW_COLUMNS`) as parameters named
    ``<prefix>_<column>``, typed as the column, or as the SQL expressions ``given`` for some
    columns: the source of :func:`insert_events` inside a larger statement, which adds the
    event only when the SELECT yields a row (``.select_from`` a CTE of what was written).
    The event does not fold unless ``count`` and ``fold_key`` are given."""
    given = {"count": literal(1), "fold_key": null(), **given}
    return select(
        *(
            given[name]
            if name in given
            else bindparam(f"{prefix}_{name}", type_=_EVENTS.c[name].type)
            for name in ROW_COLUMNS
        )
    )


def bound_event_params(prefix: str, kind: str, **event: Any) -> dict[str, Any]:
    """The parameters of :func:`bound_event` for one event (``record_event``'s arguments)."""
    return {f"{prefix}_{k}": v for k, v in event_row(kind, **event).items()}


def insert_events(source: Any) -> Any:
    """INSERT into events the rows ``source`` (:func:`bound_event` SELECTs) yields."""
    return insert(_EVENTS).from_select(list(ROW_COLUMNS), source)


@cache
def _plain_insert() -> Any:
    return insert(_EVENTS)


@cache
def _folding_insert(dialect: str) -> Any:
    return inline_constants(folding(insert_on(dialect, _EVENTS)))


@cache
def _counted_insert(dialect: str) -> Any:
    stmt = insert_on(dialect, _EVENTS)
    return stmt.on_conflict_do_update(
        index_elements=[_EVENTS.c.fold_key],
        index_where=_EVENTS.c.fold_key.is_not(None),
        set_={
            "count": _EVENTS.c.count + stmt.excluded.count,
            "last_at": func.coalesce(stmt.excluded.last_at, stmt.excluded.occurred_at),
        },
    )


def folding(stmt: Any) -> Any:
    """``stmt`` (an INSERT into events, of either backend) made to fold: a row whose
    ``fold_key`` is taken raises that row's count and last-seen time; returns the count."""
    return stmt.on_conflict_do_update(
        index_elements=[_EVENTS.c.fold_key],
        index_where=_EVENTS.c.fold_key.is_not(None),
        set_={"count": _EVENTS.c.count + 1, "last_at": stmt.excluded.occurred_at},
    ).returning(_EVENTS.c.count)
