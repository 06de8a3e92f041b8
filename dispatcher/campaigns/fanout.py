"""Fan-out: a due campaign's audience becomes delivery rows, then batches of row ids."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import Integer, func, literal, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns import counts
from dispatcher.campaigns.audience import audience_filter
from dispatcher.campaigns.lifecycle import finish_if_done, start_if_due
from dispatcher.db import session_scope
from dispatcher.models import Campaign, CampaignStatus, Contact, Delivery, DeliveryStatus
from suppression.events import record_event
from suppression.models import utcnow
from suppression.sql import insert_for


def due_campaigns(session: Session, now: datetime | None = None) -> list[int]:
    """Ids of scheduled campaigns whose time has come."""
    stmt = (
        select(Campaign.id)
        .where(
            Campaign.status == CampaignStatus.SCHEDULED,
            Campaign.scheduled_at <= (now or utcnow()),
        )
        .order_by(Campaign.scheduled_at, Campaign.id)
    )
    return list(session.scalars(stmt))


def campaign_purpose(session: Session, campaign_id: int) -> str:
    """The campaign's purpose (``marketing`` when the campaign is unknown: it sends nothing)."""
    purpose = session.scalar(select(Campaign.purpose).where(Campaign.id == campaign_id))
    return purpose or "marketing"


def create_deliveries(session: Session, campaign: Campaign) -> int:
    """One queued row per contact of the audience, set-based; existing rows are kept as they
    are, so running it again adds nothing. Returns how many rows were added."""
    now = utcnow()
    audience = (
        select(
            literal(campaign.id),
            Contact.id,
            Contact.address_id,
            literal(DeliveryStatus.QUEUED.value),
            literal(0),
            literal(now, type_=Delivery.__table__.c.created_at.type),
        )
        .where(audience_filter(campaign.audience))
        .order_by(Contact.id)
    )
    stmt = (
        insert_for(session, Delivery)
        .from_select(
            ["campaign_id", "contact_id", "address_id", "status", "attempts", "created_at"],
            audience,
        )
        .on_conflict_do_nothing(index_elements=["campaign_id", "contact_id"])
    )
    # SQLAlchemy keeps an INSERT's row count only when asked (else -1 on PostgreSQL).
    result = session.execute(stmt, execution_options={"preserve_rowcount": True})
    added = int(result.rowcount or 0)  # type: ignore[attr-defined]
    changes = counts.Changes()
    changes.add(campaign.id, DeliveryStatus.QUEUED.value, added)
    counts.record(session, changes)
    return added


def fan_out(
    sessions: sessionmaker[Session], campaign_id: int, batch_size: int, *, resume: bool = False
) -> Iterator[tuple[int, int]]:
    """Start a due campaign and yield ``(first_id, last_id)`` of each batch of queued rows.

    The delivery rows are committed before the first batch is yielded, so a task published for
    a batch always finds its rows. The boundaries come from one statement; this process holds
    one pair of ids per batch (2,000 pairs for a million recipients). Safe to run again: rows
    are not duplicated, and a batch published twice is claimed once. Only the call that
    started the campaign publishes its batches, unless ``resume`` (recovery of a campaign
    whose tasks were lost) says otherwise.
    """
    with session_scope(sessions) as session:
        started = start_if_due(session, campaign_id)
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.status != CampaignStatus.SENDING:
            return
        if not started and not resume:
            return
        added = create_deliveries(session, campaign)
        record_event(session, "campaign_fanned_out", campaign_id=campaign_id, added=added)
    # Batch boundaries in ONE statement: number the queued rows in id order and cut every
    # ``batch_size``. Paging with ``id > last ORDER BY id LIMIT n`` instead re-read every
    # remaining row per page while the planner's statistics still predated the fan-out's own
    # insert (bench/README.md: ~0.4 s a page at 1M rows, so 2,000 pages took minutes).
    numbered = (
        select(
            Delivery.id.label("id"),
            # Integer division on both backends (SQLAlchemy's // says FLOOR(), not in SQLite).
            (func.row_number().over(order_by=Delivery.id) - 1)
            .self_group()
            .op("/", return_type=Integer)(literal(batch_size, Integer))
            .label("batch"),
        )
        .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.QUEUED)
        .subquery()
    )
    bounds = (
        select(func.min(numbered.c.id), func.max(numbered.c.id))
        .group_by(numbered.c.batch)
        .order_by(numbered.c.batch)
    )
    with sessions() as session:
        batches = [(int(first), int(last)) for first, last in session.execute(bounds)]
    yield from batches
    with session_scope(sessions) as session:
        finish_if_done(session, campaign_id)
