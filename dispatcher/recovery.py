"""Finding campaigns whose work was lost, and rows whose outcome a crash hid."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dispatcher.models import Campaign, CampaignStatus, Delivery, DeliveryStatus
from suppression.models import utcnow

# Longer than the task time limit: a row still ``sending`` after this has no live sender.
STUCK_SENDING = timedelta(minutes=20)
# A sending campaign with queued rows and no activity for this long lost its batches.
STALLED = timedelta(minutes=10)


def stalled_campaigns(session: Session) -> list[int]:
    """Ids of sending campaigns to fan out again; marks long-stuck claims ``unknown``."""
    now = utcnow()
    session.execute(
        update(Delivery)
        .where(
            Delivery.status == DeliveryStatus.SENDING,
            Delivery.claimed_at < now - STUCK_SENDING,
        )
        .values(status=DeliveryStatus.UNKNOWN.value, skip_reason="outcome_hidden_by_crash",
                finished_at=now)
    )
    last_activity = (
        select(func.max(func.coalesce(Delivery.finished_at, Delivery.claimed_at,
                                      Delivery.created_at)))
        .where(Delivery.campaign_id == Campaign.id)
        .scalar_subquery()
    )
    has_queued = (
        select(Delivery.id)
        .where(Delivery.campaign_id == Campaign.id, Delivery.status == DeliveryStatus.QUEUED)
        .exists()
    )
    stmt = select(Campaign.id).where(
        Campaign.status == CampaignStatus.SENDING,
        has_queued,
        last_activity < now - STALLED,
    )
    return list(session.scalars(stmt))
