"""Bounce and complaint rates of a campaign, and the pause when one passes its threshold.

Mailbox providers block bulk senders above about 0.3 % complaints; a campaign that crosses
``complaint_pause_rate`` (or ``bounce_pause_rate`` of hard bounces) stops claiming batches and
says why. Rates count only once ``pause_min_sent`` messages have gone, so one complaint on ten
messages does not stop a campaign.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.campaigns.counts import current
from dispatcher.models import Campaign, CampaignStatus, Delivery, DeliveryStatus
from dispatcher.settings import Settings
from suppression.events import record_event


@dataclass(frozen=True)
class Rates:
    sent: int
    hard_bounces: int
    complaints: int

    @property
    def bounce_rate(self) -> float:
        return self.hard_bounces / self.sent if self.sent else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "sent": self.sent,
            "hard_bounces": self.hard_bounces,
            "complaints": self.complaints,
            "bounce_rate": round(self.bounce_rate, 6),
            "complaint_rate": round(self.complaint_rate, 6),
        }


def campaign_rates(session: Session, campaign_id: int) -> Rates:
    # Sent from the campaign's counters; the few rows with feedback through the partial
    # index ix_deliveries_feedback (not a read of every sent row).
    counts = dict(
        session.execute(
            select(Delivery.feedback, func.count())
            .where(
                Delivery.campaign_id == campaign_id,
                Delivery.feedback.is_not(None),
                Delivery.status == DeliveryStatus.SENT,
            )
            .group_by(Delivery.feedback)
        ).all()
    )
    sent = current(session, [campaign_id])[campaign_id].by_status[DeliveryStatus.SENT.value]
    return Rates(
        sent=sent,
        hard_bounces=int(counts.get("hard_bounce", 0)),
        complaints=int(counts.get("complaint", 0)),
    )


def pause_if_over(session: Session, settings: Settings, campaign_id: int) -> str | None:
    """Pause a sending or scheduled campaign whose rates pass the thresholds; the reason."""
    rates = campaign_rates(session, campaign_id)
    if rates.sent < max(settings.pause_min_sent, 1):
        return None
    reason = None
    if rates.complaint_rate > settings.complaint_pause_rate:
        reason = (
            f"complaint rate {rates.complaint_rate:.2%} is over "
            f"{settings.complaint_pause_rate:.2%} ({rates.complaints} of {rates.sent})"
        )
    elif rates.bounce_rate > settings.bounce_pause_rate:
        reason = (
            f"hard-bounce rate {rates.bounce_rate:.2%} is over "
            f"{settings.bounce_pause_rate:.2%} ({rates.hard_bounces} of {rates.sent})"
        )
    if reason is None:
        return None
    campaign = session.scalar(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update(of=Campaign)
    )
    if campaign is None or campaign.status not in (
        CampaignStatus.SENDING,
        CampaignStatus.SCHEDULED,
    ):
        return None
    campaign.status = CampaignStatus.PAUSED.value
    campaign.status_reason = reason
    record_event(session, "campaign_paused", actor="inbound", campaign_id=campaign_id, why=reason)
    return reason
