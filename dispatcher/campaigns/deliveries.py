"""Delivery rows: stopping the queued ones when an address's state changes."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dispatcher.campaigns import counts
from dispatcher.models import Campaign, Delivery, DeliveryStatus
from suppression.gate import Purpose, blocking_reason
from suppression.models import utcnow


def stop_queued(session: Session, address_id: int) -> int:
    """Cancel the queued (not yet claimed) deliveries to ``address_id`` that the gate now
    refuses; returns how many. The gate decides, so an unsubscribe stops marketing but not a
    queued service notice, while a postal request stops both.

    Passed to :func:`suppression.unsubscribe.unsubscribe_address` and called by staff
    suppressions, so the stop commits in the same transaction as the suppression.
    """
    changes = counts.Changes()
    for purpose in Purpose:
        reason = blocking_reason(Delivery.address_id, purpose)
        result = session.execute(
            update(Delivery)
            .where(
                Delivery.address_id == address_id,
                Delivery.status == DeliveryStatus.QUEUED,
                Delivery.campaign_id.in_(select(Campaign.id).where(Campaign.purpose == purpose)),
                reason.is_not(None),
            )
            .values(status=DeliveryStatus.CANCELLED.value, skip_reason=reason, finished_at=utcnow())
            .returning(Delivery.campaign_id, Delivery.skip_reason)
        )
        for campaign_id, why in result:
            changes.move(
                campaign_id,
                DeliveryStatus.QUEUED.value,
                DeliveryStatus.CANCELLED.value,
                reason_after=why,
            )
    counts.record(session, changes)
    return sum(n for n in changes.values() if n > 0)
