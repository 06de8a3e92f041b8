"""Console sessions kept in the database, so they can be listed and ended.

The signed cookie (``security.SignedSessionInterface``) carries a random key; the row holds
its SHA-256, who, since when, last seen, IP and browser. A request whose row is ended, idle
past ``console_idle_seconds`` or whose staff member is disabled is signed out, whatever the
cookie says: sign-out, "sign out this session" (an admin, or staff for their own others), a
disabled account and a password change end sessions at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dispatcher.models import Staff, StaffSession
from suppression.events import Hit
from suppression.models import utcnow

# last_seen_at is written at most this often (one UPDATE a minute, not one per request).
SEEN_EVERY = timedelta(seconds=60)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def open_session(session: Session, staff: Staff, hit: Hit) -> str:
    """A new session for ``staff``; returns the key the cookie carries (never stored)."""
    key = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        StaffSession(
            staff_id=staff.id,
            key_hash=_hash(key),
            created_at=now,
            last_seen_at=now,
            ip=hit.ip,
            user_agent=(hit.user_agent or "")[:512] or None,
        )
    )
    session.flush()
    return key


def resume(
    session: Session, key: str, idle_seconds: float, now: datetime | None = None
) -> tuple[StaffSession, Staff] | None:
    """The open session the cookie names and its staff member, else None (ended, idle too
    long, account disabled). Reads only; :func:`seen` notes the request."""
    now = now or utcnow()
    found = session.execute(
        select(StaffSession, Staff)
        .join(Staff, Staff.id == StaffSession.staff_id)
        .where(StaffSession.key_hash == _hash(key), StaffSession.ended_at.is_(None))
    ).first()
    if found is None:
        return None
    row, staff = found
    if staff.disabled_at is not None:
        return None
    if row.last_seen_at < now - timedelta(seconds=idle_seconds) - SEEN_EVERY:
        return None
    return row, staff


def due(row: StaffSession, now: datetime | None = None) -> bool:
    """Whether the session's last sign of life should be written (once a minute)."""
    return (now or utcnow()) - row.last_seen_at >= SEEN_EVERY


def seen(session: Session, session_id: int, hit: Hit) -> None:
    """Note a request as the session's last sign of life, with its IP and browser."""
    session.execute(
        update(StaffSession)
        .where(StaffSession.id == session_id, StaffSession.ended_at.is_(None))
        .values(last_seen_at=utcnow(), ip=hit.ip, user_agent=(hit.user_agent or "")[:512] or None)
    )


def end_session(
    session: Session, session_id: int, *, reason: str, by: str | None, staff_id: int | None = None
) -> bool:
    """End one open session (of ``staff_id`` when given); False when there was none."""
    stmt = update(StaffSession).where(
        StaffSession.id == session_id, StaffSession.ended_at.is_(None)
    )
    if staff_id is not None:
        stmt = stmt.where(StaffSession.staff_id == staff_id)
    result = session.execute(stmt.values(ended_at=utcnow(), end_reason=reason, ended_by=by))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def end_sessions_of(
    session: Session, staff_id: int, *, reason: str, by: str | None, keep: int | None = None
) -> int:
    """End every open session of a staff member (but ``keep``); returns how many."""
    stmt = update(StaffSession).where(
        StaffSession.staff_id == staff_id, StaffSession.ended_at.is_(None)
    )
    if keep is not None:
        stmt = stmt.where(StaffSession.id != keep)
    result = session.execute(stmt.values(ended_at=utcnow(), end_reason=reason, ended_by=by))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass
class OpenSession:
    id: int
    staff_id: int
    email: str
    role: str
    created_at: datetime
    last_seen_at: datetime
    ip: str | None
    user_agent: str | None


def open_sessions(
    session: Session, idle_seconds: float, staff_id: int | None = None
) -> list[OpenSession]:
    """Sessions not ended and seen within the idle timeout, most recently seen first."""
    since = utcnow() - timedelta(seconds=idle_seconds) - SEEN_EVERY
    stmt = (
        select(StaffSession, Staff.email, Staff.role)
        .join(Staff, Staff.id == StaffSession.staff_id)
        .where(
            StaffSession.ended_at.is_(None),
            StaffSession.last_seen_at >= since,
            Staff.disabled_at.is_(None),
        )
        .order_by(StaffSession.last_seen_at.desc(), StaffSession.id.desc())
        .limit(500)
    )
    if staff_id is not None:
        stmt = stmt.where(StaffSession.staff_id == staff_id)
    return [
        OpenSession(
            row.id,
            row.staff_id,
            email,
            role,
            row.created_at,
            row.last_seen_at,
            row.ip,
            row.user_agent,
        )
        for row, email, role in session.execute(stmt)
    ]
