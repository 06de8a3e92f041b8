"""Raw inbound messages are kept for audit for ``inbound_keep_days``; then only the row
(kind, outcome, matched delivery, why) stays."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dispatcher.models import InboundMessage
from dispatcher.settings import Settings
from suppression.models import utcnow


def prune_raw(session: Session, settings: Settings, *, dry_run: bool = False) -> int:
    """Drop the raw bytes of messages older than the retention; returns how many."""
    before = utcnow() - timedelta(days=settings.inbound_keep_days)
    if dry_run:
        old = (InboundMessage.received_at < before, InboundMessage.raw.is_not(None))
        return session.scalar(select(func.count()).where(*old)) or 0
    result = session.execute(
        update(InboundMessage)
        .where(InboundMessage.received_at < before, InboundMessage.raw.is_not(None))
        .values(raw=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
