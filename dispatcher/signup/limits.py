"""Fixed-window request counters in the database, so every web worker counts the same.

One upsert per check: it opens a new window when the old one has passed, else counts one
more, and returns the count; the row lock (PostgreSQL) or the write lock (SQLite) orders
concurrent checks, so ``limit`` requests pass and the next one does not, however many
processes serve the form.
"""

from __future__ import annotations

import time

from sqlalchemy import case, delete, update
from sqlalchemy.orm import Session

from dispatcher.models import RequestLimit
from suppression.sql import insert_for


def take(
    session: Session, key: str, *, limit: int, window_seconds: float, now: float | None = None
) -> bool:
    """Count one request under ``key``; False when it is over ``limit`` in the window."""
    now = time.time() if now is None else now
    stmt = insert_for(session, RequestLimit).values(key=key, window_start=now, count=1)
    expired = RequestLimit.window_start <= now - window_seconds
    stmt = stmt.on_conflict_do_update(
        index_elements=[RequestLimit.key],
        set_={
            # Refused requests stop counting at limit + 1, so a slot given back is free again.
            "count": case(
                (expired, 1),
                (RequestLimit.count > limit, RequestLimit.count),
                else_=RequestLimit.count + 1,
            ),
            "window_start": case((expired, now), else_=RequestLimit.window_start),
        },
    ).returning(RequestLimit.count)
    count = session.execute(stmt).scalar_one()
    return bool(count <= limit)


def give_back(session: Session, key: str, *, limit: int) -> None:
    """Return one allowed request to ``key``'s window (the mail it allowed could not go)."""
    session.execute(
        update(RequestLimit)
        .where(RequestLimit.key == key, RequestLimit.count > 0)
        .values(count=case((RequestLimit.count > limit, limit - 1), else_=RequestLimit.count - 1))
    )


def prune(session: Session, older_than_seconds: float, now: float | None = None) -> int:
    """Delete counters whose window started more than ``older_than_seconds`` ago."""
    now = time.time() if now is None else now
    result = session.execute(
        delete(RequestLimit).where(RequestLimit.window_start < now - older_than_seconds)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
