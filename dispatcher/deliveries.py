"""Delivery rows: stopping, claiming and recording them."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from dispatcher.models import Delivery, DeliveryStatus
from suppression.models import utcnow


def stop_queued(session: Session, address_id: int) -> int:
    """Cancel every queued (not yet claimed) delivery to ``address_id``; returns how many.

    Passed to :func:`suppression.unsubscribe.apply_unsubscribe` so the stop commits in the
    same transaction as the suppression.
    """
    stmt = (
        update(Delivery)
        .where(Delivery.address_id == address_id, Delivery.status == DeliveryStatus.QUEUED)
        .values(
            status=DeliveryStatus.CANCELLED,
            skip_reason="unsubscribe",
            finished_at=utcnow(),
        )
    )
    return session.execute(stmt).rowcount or 0  # type: ignore[attr-defined]
