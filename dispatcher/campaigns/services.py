"""Campaigns: created by staff, scheduled, paused, resumed, cancelled, reported on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dispatcher.campaigns import counts, lifecycle
from dispatcher.campaigns.audience import AudienceError, validate_audience
from dispatcher.campaigns.lifecycle import CampaignError, IllegalTransition, get_campaign
from dispatcher.inbound.rates import Rates, campaign_rates
from dispatcher.models import Campaign, CampaignContent, CampaignStatus, Delivery, DeliveryStatus
from dispatcher.sending import stored_render
from dispatcher.sending.rendering import CampaignView, TemplateProblem, check_campaign
from dispatcher.sending.staff_text import StaffContent
from dispatcher.settings import Settings
from suppression.events import record_event
from suppression.gate import Purpose
from suppression.models import utcnow

__all__ = ["CampaignError", "IllegalTransition", "get_campaign"]


def staff_content(row: CampaignContent) -> StaffContent:
    return StaffContent(
        version=row.version,
        subject=row.subject,
        preheader=row.preheader,
        body_format=row.body_format,
        body=row.body,
        body_text=row.body_text,
        layout=row.layout,
    )


def campaign_view(campaign: Campaign) -> CampaignView:
    content = campaign.content
    return CampaignView(
        id=campaign.id,
        name=campaign.name,
        subject=content.subject if content is not None else campaign.subject,
        purpose=campaign.purpose,
        template=content.layout if content is not None else campaign.template,
        content=staff_content(content) if content is not None else None,
    )


def _valid_purpose(purpose: str) -> Purpose:
    try:
        return Purpose(purpose)
    except ValueError:
        names = ", ".join(p.value for p in Purpose)
        raise CampaignError(f"unknown purpose {purpose!r}: use one of {names}") from None


def create_campaign(
    session: Session,
    settings: Settings,
    *,
    name: str,
    subject: str,
    template: str,
    purpose: str = Purpose.MARKETING.value,
    audience: str | None = None,
    actor: str | None = None,
    content: StaffContent | None = None,
) -> Campaign:
    """A draft campaign; its template and audience are checked now and again at scheduling.

    With ``content`` the campaign's body is staff-written (version 1 of it is stored) and
    ``template`` names the layout it sits in.
    """
    if not name.strip():
        raise CampaignError("the campaign needs a name (--name)")
    if not subject.strip():
        raise CampaignError("the campaign needs a subject (--subject)")
    if any(ch in subject for ch in "\r\n\x00"):
        raise CampaignError("the subject contains a line break; a mail header cannot carry one")
    checked = _valid_purpose(purpose)
    try:
        validate_audience(audience)
    except AudienceError as exc:
        raise CampaignError(f"audience: {exc}") from None
    campaign = Campaign(
        name=name.strip(),
        subject=subject,
        template=template,
        purpose=checked.value,
        audience=audience or None,
        status=CampaignStatus.DRAFT.value,
        created_by=actor,
    )
    session.add(campaign)
    session.flush()
    if content is not None:
        add_content_version(session, campaign, content, actor=actor)
    try:
        prepared = check_campaign(settings, campaign_view(campaign))
    except TemplateProblem as exc:
        raise CampaignError(f"campaign {name!r}: {exc}") from None
    stored_render.save(session, campaign.id, prepared)
    record_event(session, "campaign_created", actor=actor, campaign_id=campaign.id)
    return campaign


def add_content_version(
    session: Session, campaign: Campaign, content: StaffContent, *, actor: str | None
) -> CampaignContent:
    """Store ``content`` as the campaign's next version and use it (drafts only).

    Versions are never changed; a scheduled campaign keeps the version it was scheduled with.
    """
    if campaign.status != CampaignStatus.DRAFT:
        raise CampaignError(
            f"campaign {campaign.id} is {campaign.status}; only a draft's content can change"
        )
    if any(ch in content.subject for ch in "\r\n\x00"):
        raise CampaignError("the subject contains a line break; a mail header cannot carry one")
    if not content.subject.strip():
        raise CampaignError("the campaign needs a subject")
    if not content.body.strip():
        raise CampaignError("the body is empty")
    latest = session.scalar(
        select(func.max(CampaignContent.version)).where(CampaignContent.campaign_id == campaign.id)
    )
    row = CampaignContent(
        campaign_id=campaign.id,
        version=(latest or 0) + 1,
        subject=content.subject,
        preheader=content.preheader,
        body_format=content.body_format,
        body=content.body,
        body_text=content.body_text,
        layout=content.layout,
        created_by=actor,
    )
    session.add(row)
    session.flush()
    campaign.content_id = row.id
    campaign.content = row
    campaign.subject = content.subject
    campaign.template = content.layout
    record_event(
        session,
        "campaign_content_saved",
        actor=actor,
        campaign_id=campaign.id,
        version=row.version,
    )
    return row


def schedule_campaign(
    session: Session,
    settings: Settings,
    campaign_id: int,
    *,
    at: datetime | None = None,
    actor: str | None = None,
) -> Campaign:
    """Move a draft to ``scheduled``; the beat starts it when due. Refused, changing nothing,
    if the template does not render, lacks the unsubscribe link or postal address."""
    campaign = get_campaign(session, campaign_id, for_update=True)
    if campaign.status != CampaignStatus.DRAFT:
        # Scheduled is also reached by resume and requeue; staff schedule drafts only.
        raise IllegalTransition(campaign_id, campaign.status, CampaignStatus.SCHEDULED)
    if at is not None and at.tzinfo is None:
        raise CampaignError("--at needs a time zone (e.g. 2026-12-01T09:00:00+00:00)")
    try:
        prepared = check_campaign(settings, campaign_view(campaign))
    except TemplateProblem as exc:
        raise CampaignError(f"campaign {campaign_id} cannot be scheduled: {exc}") from None
    # Sending processes fill in this render instead of inlining CSS themselves.
    stored_render.save(session, campaign_id, prepared)
    lifecycle.transition(session, campaign, CampaignStatus.SCHEDULED)
    campaign.scheduled_at = at or utcnow()
    record_event(
        session,
        "campaign_scheduled",
        actor=actor,
        campaign_id=campaign_id,
        at=campaign.scheduled_at.isoformat(),
    )
    return campaign


def cancel_campaign(session: Session, campaign_id: int, *, actor: str | None = None) -> int:
    """Stop a campaign: nothing more is claimed; returns how many queued messages were dropped.

    Batches already in flight finish their current messages.
    """
    lifecycle.move(session, campaign_id, CampaignStatus.CANCELLED)
    dropped = session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.QUEUED)
        .values(
            status=DeliveryStatus.CANCELLED.value,
            skip_reason="campaign_cancelled",
            finished_at=utcnow(),
        )
    ).rowcount  # type: ignore[attr-defined]
    changes = counts.Changes()
    changes.move(
        campaign_id,
        DeliveryStatus.QUEUED.value,
        DeliveryStatus.CANCELLED.value,
        int(dropped or 0),
        reason_after="campaign_cancelled",
    )
    counts.record(session, changes)
    record_event(
        session, "campaign_cancelled", actor=actor, campaign_id=campaign_id, dropped=dropped
    )
    return int(dropped or 0)


def pause_campaign(session: Session, campaign_id: int, *, actor: str | None = None) -> None:
    """Stop claiming new batches; the batch in flight finishes. ``resume`` goes on."""
    lifecycle.move(session, campaign_id, CampaignStatus.PAUSED)
    record_event(session, "campaign_paused", actor=actor, campaign_id=campaign_id)


def resume_campaign(session: Session, campaign_id: int, *, actor: str | None = None) -> None:
    """Schedule a paused campaign again, now: the beat re-queues what is left of it."""
    campaign = get_campaign(session, campaign_id, for_update=True)
    if campaign.status != CampaignStatus.PAUSED:
        # Scheduled is also reached from a draft or by requeue; resume is for a pause.
        raise IllegalTransition(campaign_id, campaign.status, CampaignStatus.SCHEDULED)
    lifecycle.transition(session, campaign, CampaignStatus.SCHEDULED)
    campaign.scheduled_at = utcnow()
    campaign.status_reason = None
    record_event(session, "campaign_resumed", actor=actor, campaign_id=campaign_id)


def requeue_unknown(session: Session, campaign_id: int, *, actor: str | None = None) -> int:
    """Staff choose to send again the messages whose outcome a crash hid.

    They go back to ``queued`` (the gate is applied again when claimed) and the campaign is
    scheduled again, now. Returns how many.
    """
    campaign = get_campaign(session, campaign_id, for_update=True)
    if campaign.status == CampaignStatus.CANCELLED:
        raise IllegalTransition(campaign_id, campaign.status, CampaignStatus.SCHEDULED)
    # Two steps so the counters learn each row's old reason: the first keeps it (and returns
    # it), the second clears it on exactly those rows (no other path leaves a queued row
    # with a reason, and they are this transaction's until it commits).
    moved = session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.UNKNOWN)
        .values(status=DeliveryStatus.QUEUED.value, claim_token=None, finished_at=None)
        .returning(Delivery.skip_reason)
    ).all()
    count = len(moved)
    if count:
        session.execute(
            update(Delivery)
            .where(
                Delivery.campaign_id == campaign_id,
                Delivery.status == DeliveryStatus.QUEUED,
                Delivery.skip_reason.is_not(None),
            )
            .values(skip_reason=None)
        )
    changes = counts.Changes()
    for (why,) in moved:
        changes.move(
            campaign_id,
            DeliveryStatus.UNKNOWN.value,
            DeliveryStatus.QUEUED.value,
            reason_before=why,
        )
    counts.record(session, changes)
    if count and campaign.status != CampaignStatus.SCHEDULED:
        lifecycle.transition(session, campaign, CampaignStatus.SCHEDULED)
    if count:
        campaign.scheduled_at = utcnow()
    record_event(
        session, "campaign_unknown_requeued", actor=actor, campaign_id=campaign_id, count=count
    )
    return int(count or 0)


def list_campaigns(session: Session) -> list[Campaign]:
    return list(session.scalars(select(Campaign).order_by(Campaign.id)))


@dataclass
class CampaignReport:
    id: int
    name: str
    purpose: str
    status: str
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    by_status: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    status_reason: str | None = None
    # What came back about sent messages (dispatcher/inbound): counts and rates.
    rates: Rates = field(default_factory=lambda: Rates(0, 0, 0))
    # The fan-out is still adding delivery rows (its first batches already send).
    adding_recipients: bool = False

    @property
    def feedback(self) -> dict[str, float | int]:
        return self.rates.as_dict()

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def pending(self) -> int:
        return self.by_status.get("queued", 0) + self.by_status.get("sending", 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "purpose": self.purpose,
            "status": self.status,
            "scheduled_at": self.scheduled_at.isoformat() if self.scheduled_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "total": self.total,
            "deliveries": self.by_status,
            "skipped_by_reason": self.by_reason,
            "status_reason": self.status_reason,
            "feedback": self.feedback,
            "adding_recipients": self.adding_recipients,
        }


def campaign_report(session: Session, campaign_id: int) -> CampaignReport:
    """Counts per delivery status and per skip reason, from the campaign's counters (kept
    with every change of a row; ``campaign status --verify-counts`` compares them)."""
    campaign = get_campaign(session, campaign_id)
    found = counts.current(session, [campaign_id])[campaign_id]
    by_status, by_reason = found.by_status, found.by_reason
    return CampaignReport(
        id=campaign.id,
        name=campaign.name,
        purpose=campaign.purpose,
        status=campaign.status,
        scheduled_at=campaign.scheduled_at,
        started_at=campaign.started_at,
        finished_at=campaign.finished_at,
        by_status=dict(by_status),
        by_reason=by_reason,
        status_reason=campaign.status_reason,
        rates=campaign_rates(session, campaign_id),
        adding_recipients=campaign.fanning_out and campaign.status == CampaignStatus.SENDING,
    )
