"""What the console shows about campaigns beyond ``campaigns.services``: the gate's answer for
an audience, progress with rate and ETA, sends over time, and a test message.

Everything here reads; the only write is none (a test message is sent, not recorded as a
delivery). Scheduling, pausing and the rest are ``dispatcher.campaigns.services``.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from dispatcher.campaigns import counts
from dispatcher.campaigns.audience import AudienceError, audience_filter
from dispatcher.campaigns.services import (
    CampaignError,
    CampaignReport,
    campaign_report,
    get_campaign,
)
from dispatcher.models import Campaign, CampaignStatus, Contact, Delivery, DeliveryStatus
from dispatcher.sending.composing import MessageFactory
from dispatcher.sending.messages import build_message
from dispatcher.sending.rendering import Recipient
from dispatcher.sending.transports import open_transport
from dispatcher.settings import Settings
from suppression.gate import Purpose, blocking_reason
from suppression.models import utcnow
from suppression.tokens import TokenSigner

RATE_WINDOW = timedelta(seconds=60)


@dataclass
class AudienceCounts:
    """The gate's answer for an audience now: who matches, who would be sent, who skipped."""

    matched: int = 0
    eligible: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def audience_counts(session: Session, purpose: str, audience: str | None) -> AudienceCounts:
    """Counted by the same SQL expression the claim applies (``suppression.gate``)."""
    try:
        where = audience_filter(audience)
        checked = Purpose(purpose)
    except (AudienceError, ValueError) as exc:
        raise CampaignError(f"audience: {exc}") from None
    reasons = (
        select(blocking_reason(Contact.address_id, checked).label("reason"))
        .select_from(Contact)
        .where(where)
        .subquery()
    )
    if session.get_bind().dialect.name == "postgresql":
        # The planner's estimate for a gate over every contact crosses jit_above_cost, and
        # compiling the expression took longer than running it (2 s of 2.9 s at 20k rows).
        session.execute(text("SET LOCAL jit = off"))
    counts = AudienceCounts()
    for reason, count in session.execute(
        select(reasons.c.reason, func.count()).group_by(reasons.c.reason)
    ):
        counts.matched += count
        if reason is None:
            counts.eligible += count
        else:
            counts.skipped[str(reason)] = count
    counts.skipped = dict(sorted(counts.skipped.items()))
    return counts


def progress(
    session: Session, campaign_id: int, report: CampaignReport | None = None
) -> dict[str, Any]:
    """Counts per status, the send rate over the last minute and the ETA (for the JSON poll)."""
    report = report or campaign_report(session, campaign_id)
    finished = report.status in (CampaignStatus.DONE, CampaignStatus.CANCELLED)
    recent = 0
    if not finished:  # a finished campaign sends nothing
        recent = counts.finished_since(session, campaign_id, utcnow() - RATE_WINDOW)
    rate = recent / RATE_WINDOW.total_seconds()
    pending = report.pending
    eta = round(pending / rate) if rate > 0 and pending else None
    data = report.as_dict()
    data.update(
        rate_per_second=round(rate, 2),
        eta_seconds=eta,
        pending=pending,
        finished=finished,
    )
    return data


def sends_over_time(session: Session, campaign_id: int) -> list[tuple[str, int]]:
    """Messages sent per minute (UTC), oldest first: from the campaign's counters."""
    return counts.sent_per_minute(session, campaign_id)


def failures(session: Session, campaign_id: int, limit: int = 20) -> list[tuple[str, int]]:
    """The most frequent errors of failed or unknown deliveries (no address in them)."""
    rows = session.execute(
        select(func.coalesce(Delivery.error, Delivery.status), func.count())
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.status.in_([DeliveryStatus.FAILED.value, DeliveryStatus.UNKNOWN.value]),
        )
        .group_by(func.coalesce(Delivery.error, Delivery.status))
        .order_by(func.count().desc())
        .limit(limit)
    )
    return [(str(e)[:200], int(c)) for e, c in rows]


SAMPLE = Recipient(
    first_name="Sam",
    last_name="Sample",
    unsubscribe_url="",
    preferences_url="",
)


def sample_or_contact(session: Session, address: str | None) -> tuple[str | None, str | None, int]:
    """First name, last name and address id of a contact by address, else the sample's."""
    if address:
        from suppression.address import canonical_address
        from suppression.models import Address

        found = session.execute(
            select(Contact.first_name, Contact.last_name, Contact.address_id)
            .join(Address, Address.id == Contact.address_id)
            .where(Address.address == canonical_address(address))
        ).first()
        if found is not None:
            return found[0], found[1], int(found[2])
    return SAMPLE.first_name, SAMPLE.last_name, 0


def render_for(
    settings: Settings, campaign: Campaign, first: str | None, last: str | None
) -> tuple[MessageFactory, Any]:
    """The campaign's message for a recipient, through the sending path; links unsubscribe
    nobody (address id 0)."""
    factory = MessageFactory(settings, campaign, TokenSigner(settings.secret_keys))
    unsubscribe, preferences = factory.links(0)
    rendered = factory.prepared.render(
        Recipient(
            first_name=first,
            last_name=last,
            unsubscribe_url=unsubscribe,
            preferences_url=preferences,
        )
    )
    return factory, rendered


def send_test(session: Session, settings: Settings, campaign_id: int, to_address: str) -> str:
    """Send the campaign's message to ``to_address`` with the subject marked [TEST].

    Counted nowhere: no delivery row, no campaign state; the links unsubscribe nobody.
    Returns the subject sent.
    """
    campaign = get_campaign(session, campaign_id)
    factory, rendered = render_for(settings, campaign, SAMPLE.first_name, SAMPLE.last_name)
    rendered = dataclasses.replace(rendered, subject=f"[TEST] {rendered.subject}")
    unsubscribe, _ = factory.links(0)
    message = build_message(
        rendered,
        sender=settings.sender,
        to_address=to_address,
        to_name=None,
        message_id=f"<test.{campaign_id}.{secrets.token_hex(8)}@{factory.sender_domain}>",
        list_unsubscribe_url=unsubscribe if factory.marketing else None,
        unsubscribe_mailto=settings.unsubscribe_mailto if factory.marketing else None,
    )
    with open_transport(settings.mail_url, timeout=settings.smtp_timeout_seconds) as transport:
        transport.send(factory.sender_address, to_address, message)
    return str(rendered.subject)
