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
    """What came back about a campaign's sent messages (each counted once, at its worst)."""

    sent: int
    hard_bounces: int
    complaints: int
    soft_bounces: int = 0

    @property
    def bounce_rate(self) -> float:
        return self.hard_bounces / self.sent if self.sent else 0.0

    @property
    def soft_bounce_rate(self) -> float:
        return self.soft_bounces / self.sent if self.sent else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "sent": self.sent,
            "hard_bounces": self.hard_bounces,
            "soft_bounces": self.soft_bounces,
            "complaints": self.complaints,
            "bounce_rate": round(self.bounce_rate, 6),
            "soft_bounce_rate": round(self.soft_bounce_rate, 6),
            "complaint_rate": round(self.complaint_rate, 6),
        }


def campaigns_rates(session: Session, campaign_ids: list[int]) -> dict[int, Rates]:
    """Rates of several campaigns (campaigns that sent nothing: zeros): sent from the
    campaigns' counters, the few rows with feedback through the partial index
    ix_deliveries_feedback — not a read of every sent row."""
    feedback: dict[int, dict[str | None, int]] = {cid: {} for cid in campaign_ids}
    if campaign_ids:
        for campaign_id, kind, count in session.execute(
            select(Delivery.campaign_id, Delivery.feedback, func.count())
            .where(
                Delivery.campaign_id.in_(campaign_ids),
                Delivery.feedback.is_not(None),
                Delivery.status == DeliveryStatus.SENT,
            )
            .group_by(Delivery.campaign_id, Delivery.feedback)
        ):
            feedback[campaign_id][kind] = int(count)
    sent = current(session, campaign_ids)
    return {
        cid: Rates(
            sent=sent[cid].by_status[DeliveryStatus.SENT.value],
            hard_bounces=c.get("hard_bounce", 0),
            complaints=c.get("complaint", 0),
            soft_bounces=c.get("soft_bounce", 0),
        )
        for cid, c in feedback.items()
    }


def campaign_rates(session: Session, campaign_id: int) -> Rates:
    return campaigns_rates(session, [campaign_id])[campaign_id]


@dataclass(frozen=True)
class Breach:
    """One rate past its pause threshold."""

    what: str  # "complaint" or "hard-bounce"
    rate: float
    limit: float
    count: int
    sent: int

    @property
    def reason(self) -> str:
        """As a paused campaign's status reason says it."""
        return (
            f"{self.what} rate {self.rate:.2%} is over {self.limit:.2%} "
            f"({self.count} of {self.sent})"
        )

    @property
    def short(self) -> str:
        return f"{self.what} rate over {self.limit:.2%}"


def breaches(rates: Rates, settings: Settings) -> list[Breach]:
    """The rates past their pause thresholds, complaints first; none while fewer than
    ``pause_min_sent`` messages have gone."""
    if rates.sent < max(settings.pause_min_sent, 1):
        return []
    found = []
    if rates.complaint_rate > settings.complaint_pause_rate:
        found.append(
            Breach(
                "complaint",
                rates.complaint_rate,
                settings.complaint_pause_rate,
                rates.complaints,
                rates.sent,
            )
        )
    if rates.bounce_rate > settings.bounce_pause_rate:
        found.append(
            Breach(
                "hard-bounce",
                rates.bounce_rate,
                settings.bounce_pause_rate,
                rates.hard_bounces,
                rates.sent,
            )
        )
    return found


def over_threshold(rates: Rates, settings: Settings) -> str | None:
    """Why these rates call for a pause (the first breach's reason), or None."""
    found = breaches(rates, settings)
    return found[0].reason if found else None


def paused_for_rates(status: str, status_reason: str | None) -> bool:
    """Whether a campaign is paused because :func:`pause_if_over` paused it."""
    return status == CampaignStatus.PAUSED and (status_reason or "").startswith(
        ("complaint rate ", "hard-bounce rate ")
    )


def pause_if_over(session: Session, settings: Settings, campaign_id: int) -> str | None:
    """Pause a sending or scheduled campaign whose rates pass the thresholds; the reason."""
    reason = over_threshold(campaign_rates(session, campaign_id), settings)
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
