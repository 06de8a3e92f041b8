"""Finding campaigns whose work was lost, and rows whose outcome a crash hid."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from dispatcher.campaigns import counts
from dispatcher.campaigns.lifecycle import close_finished, finish_if_done
from dispatcher.models import Campaign, CampaignStatus, Delivery, DeliveryStatus
from suppression.models import utcnow


def expire_dead_claims(session: Session, lease_seconds: float) -> list[int]:
    """Rows whose sender stopped renewing its claim: their outcome is unknown. Marks them
    so (never resent automatically) and closes campaigns that had nothing else left.
    Returns the campaigns touched."""
    now = utcnow()
    expired = list(
        session.scalars(
            update(Delivery)
            .where(
                Delivery.status == DeliveryStatus.SENDING,
                Delivery.lease_seen_at() < now - timedelta(seconds=lease_seconds),
            )
            .values(
                status=DeliveryStatus.UNKNOWN.value,
                skip_reason="outcome_hidden_by_crash",
                finished_at=now,
            )
            .returning(Delivery.campaign_id)
        )
    )
    changes = counts.Changes()
    for campaign_id in expired:
        changes.move(
            campaign_id,
            DeliveryStatus.SENDING.value,
            DeliveryStatus.UNKNOWN.value,
            reason_after="outcome_hidden_by_crash",
        )
    counts.record(session, changes)
    campaigns = sorted(set(expired))
    for campaign_id in campaigns:
        finish_if_done(session, campaign_id)
    return campaigns


def stalled_campaigns(session: Session, lease_seconds: float, stall_seconds: float) -> list[int]:
    """Ids of sending campaigns whose batches were lost, or whose fan-out stopped before
    adding every row, to fan out again (after marking dead claims ``unknown`` and closing
    every sending campaign whose rows are all final)."""
    now = utcnow()
    expire_dead_claims(session, lease_seconds)
    close_finished(session)
    last_activity = (
        select(
            func.max(
                func.coalesce(
                    Delivery.finished_at,
                    Delivery.renewed_at,
                    Delivery.claimed_at,
                    Delivery.created_at,
                )
            )
        )
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
        # rows left to publish, or a fan-out that stopped before adding them all
        or_(has_queued, Campaign.fanning_out),
        func.coalesce(last_activity, Campaign.started_at) < now - timedelta(seconds=stall_seconds),
    )
    return list(session.scalars(stmt))
