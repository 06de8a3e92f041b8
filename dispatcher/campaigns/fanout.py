"""Fan-out: a due campaign's audience becomes delivery rows, then batches of row ids."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Delete,
    Insert,
    Integer,
    Select,
    Table,
    Update,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns import counts
from dispatcher.campaigns.audience import audience_filter
from dispatcher.campaigns.lifecycle import finish_if_done, start_if_due
from dispatcher.db import session_scope
from dispatcher.models import (
    Campaign,
    CampaignStatus,
    Contact,
    Delivery,
    DeliveryStatus,
    PublishedBatch,
)
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


# Contacts per INSERT of the fan-out, at most. PostgreSQL holds every inserted row's
# foreign-key checks in the statement's memory until the statement ends: 10M recipients in
# one INSERT took a 568 MB backend (bench/run.py --only fanout).
FAN_OUT_CHUNK = 500_000

Batches = list[tuple[int, int]]
# Publishes ``(first_id, last_id)`` batches to the broker. Called inside the transaction
# that moves the published mark, before its commit: a publish that raises rolls the mark
# back (the batches stay unpublished and the next refill takes them); a crash after the
# publish and before the commit publishes them twice at worst, and a batch is claimed once.
Publish = Callable[[Batches], object]


def contact_ranges(low: int, high: int, first: int, most: int) -> Iterator[tuple[int, int]]:
    """``[start, stop)`` ranges of contact ids covering ``low``..``high``: the first ``first``
    ids wide, each next one twice as wide, up to ``most``. The fan-out's first batches are
    published after a small first range, and a large campaign still takes few statements."""
    width = max(1, first)
    start = low
    while start <= high:
        yield start, start + width
        start += width
        width = min(most, width * 2)


def add_deliveries(session: Session, campaign: Campaign, start: int, stop: int) -> int:
    """One queued row per contact of the audience whose id is in ``[start, stop)``, in ONE
    set-based statement (the caller's transaction); existing rows are kept as they are, so
    running it again adds nothing. Counted in the campaign's counters; returns how many rows
    were added."""
    audience = (
        select(
            literal(campaign.id),
            Contact.id,
            Contact.address_id,
            literal(DeliveryStatus.QUEUED.value),
            literal(0),
            literal(utcnow(), type_=Delivery.__table__.c.created_at.type),
        )
        .where(Contact.id >= start, Contact.id < stop, audience_filter(campaign.audience))
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


def contact_bounds(session: Session) -> tuple[int, int]:
    """The lowest and highest contact id now (an empty range when there is none)."""
    low, high = session.execute(select(func.min(Contact.id), func.max(Contact.id))).one()
    return (low or 0), (-1 if high is None else high)


def create_deliveries(session: Session, campaign: Campaign, chunk: int = FAN_OUT_CHUNK) -> int:
    """Every delivery row of the campaign at once, in the caller's transaction, ``chunk``
    contact ids per statement (:func:`add_deliveries`). Returns how many rows were added."""
    low, high = contact_bounds(session)
    return sum(
        add_deliveries(session, campaign, start, stop)
        for start, stop in contact_ranges(low, high, chunk, chunk)
    )


def fan_out(
    sessions: sessionmaker[Session],
    campaign_id: int,
    batch_size: int,
    *,
    window: int | None = None,
    resume: bool = False,
    publish: Publish | None = None,
    chunk: int = FAN_OUT_CHUNK,
) -> Iterator[tuple[int, int]]:
    """Start a due campaign and yield ``(first_id, last_id)`` of the batches to publish now.

    The delivery rows are added a range of contact ids at a time (:func:`contact_ranges`,
    from ``batch_size`` ids up to ``chunk``), each range committed before any batch of its
    rows is yielded, so a task published for a batch always finds its rows; with
    ``window``, the window is topped up after every range, so the first batches send while
    the fan-out adds the rest, and at most ``window`` batches wait in the broker (:func:`refill`
    publishes the rest as batches finish). Without it, every batch is yielded once all rows
    are in (in ONE statement; this process holds one pair of ids per batch).

    Until its last range is committed the campaign is ``fanning_out``: it cannot be finished
    (``finish_if_done``), and a range is added only while it is ``sending`` (a pause or a
    cancel stops the fan-out; resuming starts it again). Safe to run again: rows are not
    duplicated, and a batch published twice is claimed once. Only the call that started the
    campaign publishes, unless ``resume`` (recovery of a campaign whose tasks were lost) or
    a fan-out that stopped half-way (the worker died, the database went away: the task's
    retry or redelivery) says otherwise; either way publishing starts again from the first
    queued row, since tasks for rows still queued may have been lost (a paused campaign's
    batches ran and claimed nothing).

    With ``publish``, the batches are published before the mark that covers them is
    committed (see :data:`Publish`), and yielded once published. A publish that fails while
    ranges remain does not stop the fan-out: its rows stay unpublished for the next refill
    (beat's), and the failure is raised once every row is in.
    """
    with session_scope(sessions) as session:
        started = start_if_due(session, campaign_id)
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.status != CampaignStatus.SENDING:
            return
        if not (started or resume or campaign.fanning_out):
            return
        campaign.fanning_out = True
        campaign.published_through = None  # publish from the first queued row
        session.execute(delete(PublishedBatch).where(PublishedBatch.campaign_id == campaign_id))
        low, high = contact_bounds(session)
    added = 0
    failed: Exception | None = None
    ranges = list(contact_ranges(low, high, batch_size, chunk))
    for index, (start, stop) in enumerate(ranges):
        last = index == len(ranges) - 1
        with session_scope(sessions) as session:
            campaign = _sending_for_fan_out(session, campaign_id)
            if campaign is None:
                return  # paused or cancelled: no more rows (resuming fans out again)
            more = add_deliveries(session, campaign, start, stop)
            added += more
            if last:
                _fanned_out(session, campaign, added)
        refresh_statistics(sessions, more)
        if window is not None and (more or last):
            try:
                yield from refill(sessions, campaign_id, batch_size, window, publish)
            except Exception as exc:  # noqa: BLE001 - raised below, once every row is in
                if last:
                    raise
                failed = failed or exc
    if not ranges:
        with session_scope(sessions) as session:
            campaign = _sending_for_fan_out(session, campaign_id)
            if campaign is None:
                return
            _fanned_out(session, campaign, added)
    if failed is not None:
        raise failed
    if window is None:
        batches = _all_batches(sessions, campaign_id, batch_size)
        if batches:
            with session_scope(sessions) as session:
                session.execute(
                    update(Campaign)
                    .where(Campaign.id == campaign_id)
                    .values(published_through=batches[-1][1])
                )
                if publish is not None:
                    publish(batches)
        yield from batches
    with session_scope(sessions) as session:
        finish_if_done(session, campaign_id)


def _sending_for_fan_out(session: Session, campaign_id: int) -> Campaign | None:
    """The campaign, if it is still ``sending``, its row held (``FOR KEY SHARE``) until the
    range's commit: a pause or a cancel (``FOR UPDATE``) waits for the range, then a cancel
    finds its rows queued and cancels them; a range that comes after them sees them and adds
    nothing. Workers' refills and their closing check do not wait for it."""
    status = session.scalar(
        select(Campaign.status)
        .where(Campaign.id == campaign_id)
        .with_for_update(read=True, key_share=True)
    )
    if status != CampaignStatus.SENDING:
        return None
    return session.get(Campaign, campaign_id)


def _fanned_out(session: Session, campaign: Campaign, added: int) -> None:
    campaign.fanning_out = False
    record_event(session, "campaign_fanned_out", campaign_id=campaign.id, added=added)


# A fan-out that grows ``deliveries`` by more than this share of the rows PostgreSQL's
# planner believes it holds has the table analyzed at once (autovacuum's own threshold).
ANALYZE_GROWTH = 0.1


def refresh_statistics(sessions: sessionmaker[Session], added: int) -> bool:
    """On PostgreSQL, ``ANALYZE deliveries`` when ``added`` rows outgrow what the planner
    believes the table holds. Returns whether it analyzed.

    Until autovacuum comes by (a minute or more), the planner would go on with statistics
    from before the campaign's rows: the recipients' one-click and the claim statements
    were seen re-planned on every execution, about 0.5 ms more of PostgreSQL's CPU each,
    in the very minutes when a campaign's links are clicked most (README, issue 18).
    """
    if added <= 0:
        return False
    with sessions() as session:
        if session.get_bind().dialect.name != "postgresql":
            return False
        believed = session.scalar(
            text("SELECT reltuples FROM pg_class WHERE oid = 'deliveries'::regclass")
        )
        if added < ANALYZE_GROWTH * max(float(believed or 0), 0.0) + 50:
            return False
        session.execute(text("ANALYZE deliveries"))
        session.commit()
    return True


def _all_batches(
    sessions: sessionmaker[Session], campaign_id: int, batch_size: int
) -> list[tuple[int, int]]:
    # Batch boundaries in ONE statement: number the queued rows in id order and cut every
    # ``batch_size``. Paging with ``id > last ORDER BY id LIMIT n`` instead re-read every
    # remaining row per page while the planner's statistics still predated the fan-out's own
    # insert (bench/README.md: ~0.4 s a page at 1M rows, so 2,000 pages took minutes).
    with sessions() as session:
        return _cut(session, campaign_id, batch_size, after=None, batches=None)


def _cut(
    session: Session, campaign_id: int, batch_size: int, *, after: int | None, batches: int | None
) -> list[tuple[int, int]]:
    """The next ``batches`` batches of queued rows above id ``after``, in one statement:
    number the rows in id order and cut every ``batch_size`` (an index range scan of
    ``(campaign_id, status, id)``, read no further than the rows it cuts)."""
    params: dict[str, object] = {"cut_campaign": campaign_id, "cut_size": batch_size}
    if after is not None:
        params["cut_after"] = after
    if batches is not None:
        params["cut_limit"] = batches * batch_size
    rows = session.connection().execute(
        _cut_statement(after is not None, batches is not None), params
    )
    return [(int(first), int(last)) for first, last in rows]


# The window's statements run at the end of every batch: built once per process, their
# values bound at each execution, and run on the session's connection without the ORM
# (building the cut's statement and the ORM's bulk delete and update cost about 6 ms of CPU
# a refill on a slow core, more than a batch's 160 messages spend signing their links).
_deliveries = Delivery.__table__.c
_campaigns_table = cast(Table, Campaign.__table__)
_campaigns = _campaigns_table.c
_published = cast(Table, PublishedBatch.__table__)


@functools.cache
def _cut_statement(after: bool, limited: bool) -> Select[Any]:
    rows = select(_deliveries.id).where(
        _deliveries.campaign_id == bindparam("cut_campaign", type_=_deliveries.campaign_id.type),
        _deliveries.status == DeliveryStatus.QUEUED.value,
    )
    if after:
        rows = rows.where(_deliveries.id > bindparam("cut_after", type_=_deliveries.id.type))
    if limited:
        rows = rows.order_by(_deliveries.id).limit(bindparam("cut_limit", type_=Integer))
    ids = rows.subquery()
    numbered = select(
        ids.c.id,
        # Integer division on both backends (SQLAlchemy's // says FLOOR(), not in SQLite).
        (func.row_number().over(order_by=ids.c.id) - 1)
        .self_group()
        .op("/", return_type=Integer)(bindparam("cut_size", type_=Integer))
        .label("batch"),
    ).subquery()
    return (
        select(func.min(numbered.c.id), func.max(numbered.c.id))
        .group_by(numbered.c.batch)
        .order_by(numbered.c.batch)
    )


@functools.cache
def _mark_statement() -> Select[Any]:
    return select(_campaigns.status, _campaigns.published_through).where(
        _campaigns.id == bindparam("mark_campaign", type_=_campaigns.id.type)
    )


@functools.cache
def _move_mark_statement(first: bool) -> Update:
    """Compare-and-set of the published mark: from none (``first``) or from ``mark_from``."""
    mark = _campaigns.published_through
    return (
        update(_campaigns_table)
        .where(
            _campaigns.id == bindparam("mark_campaign", type_=_campaigns.id.type),
            mark.is_(None) if first else mark == bindparam("mark_from", type_=mark.type),
        )
        .values(published_through=bindparam("mark_to", type_=mark.type))
    )


@functools.cache
def _done_batch_statement() -> Delete:
    columns = _published.c
    return delete(_published).where(
        columns.campaign_id == bindparam("gone_campaign", type_=columns.campaign_id.type),
        columns.first_id == bindparam("gone_first", type_=columns.first_id.type),
    )


_REFILL_ATTEMPTS = 3


def refill(
    sessions: sessionmaker[Session],
    campaign_id: int,
    batch_size: int,
    window: int,
    publish: Publish | None = None,
) -> Batches:
    """The batches to publish now so that at most ``window`` of this campaign's batches wait
    in the broker, and advance the campaign's published mark past them (committed before
    this returns: publish after it, never before).

    Waiting batches are read from the rows: a published batch (``published_batches``) still
    waits while any of its rows is queued — one index probe per batch, whatever the size of
    the campaign; one that does not is dropped from the list. Called at the end of every batch
    and by beat (a refill lost to a crash is redone there). Two callers at once cannot
    publish the same rows: the mark moves by compare-and-set, and the one that loses looks
    again. Nothing is published unless the campaign is ``sending``. With ``publish``, the
    batches are published before the mark's move is committed (:data:`Publish`).
    """
    for _ in range(_REFILL_ATTEMPTS):
        with session_scope(sessions) as session:
            state = _published_mark(session, campaign_id)
            if state is None:
                return []
            (mark,) = state
            # A correlated scalar subquery is run once per batch with the batch's bounds as
            # parameters, so they are index conditions whatever the planner believes about
            # a table the fan-out has just filled (as an anti-join they were a filter, and
            # every probe read all the campaign's queued rows: ~1 s at 20,000 rows).
            first_queued = (
                select(Delivery.id)
                .where(
                    Delivery.campaign_id == campaign_id,
                    Delivery.status == DeliveryStatus.QUEUED,
                    Delivery.id >= PublishedBatch.first_id,
                    Delivery.id <= PublishedBatch.last_id,
                )
                .order_by(Delivery.id)
                .limit(1)
                .scalar_subquery()
            )
            published = session.execute(
                select(PublishedBatch.first_id, first_queued).where(
                    PublishedBatch.campaign_id == campaign_id
                )
            ).all()
            finished = [first for first, queued in published if queued is None]
            if finished:
                session.execute(
                    delete(PublishedBatch).where(
                        PublishedBatch.campaign_id == campaign_id,
                        PublishedBatch.first_id.in_(finished),
                    )
                )
            waiting = len(published) - len(finished)
            free = window - waiting
            if free <= 0:
                return []
            batches = _take(session, campaign_id, batch_size, mark, free)
            if batches is not None:
                if batches and publish is not None:
                    publish(batches)
                return batches
    return []  # others moved the mark each time: they publish; beat tops up what is left


def refill_after(
    sessions: sessionmaker[Session],
    campaign_id: int,
    first_id: int,
    batch_size: int,
    publish: Publish | None = None,
) -> Batches:
    """The batch starting at ``first_id`` ran to its end: give its place in the window to the
    next batch (returned to be published; the mark is committed before this returns).

    The batch task's own refill, without :func:`refill`'s probe of every waiting batch: the
    task knows its batch left the broker. Whoever removes a batch's ``published_batches`` row
    publishes its successor, so a batch run twice, or one beat already saw finished, adds
    nothing here. A task that raised (its retry still waits in the broker) does not call
    this; beat's :func:`refill` covers a refill lost to a crash. With ``publish``, the
    successor is published before the commit (:data:`Publish`): if that fails, this batch's
    place is given back too, and beat's refill sees the batch finished and fills it.
    """
    with session_scope(sessions) as session:
        gone = (
            session.connection()
            .execute(
                _done_batch_statement(), {"gone_campaign": campaign_id, "gone_first": first_id}
            )
            .rowcount
        )
        if not gone:
            return []
        for _ in range(_REFILL_ATTEMPTS):
            # Each statement reads what others committed (PostgreSQL's read committed;
            # SQLite holds the write lock since the delete), so a lost compare-and-set
            # looks again at the mark that beat it.
            state = _published_mark(session, campaign_id)
            if state is None:
                return []
            batches = _take(session, campaign_id, batch_size, state[0], 1)
            if batches is not None:
                if batches and publish is not None:
                    publish(batches)
                return batches
    return []  # beat tops up the place this batch left


def _published_mark(session: Session, campaign_id: int) -> tuple[int | None] | None:
    """``(published_through,)`` of a sending campaign; None when it is not sending (nothing
    is published then)."""
    state = session.connection().execute(_mark_statement(), {"mark_campaign": campaign_id}).first()
    if state is None or state[0] != CampaignStatus.SENDING:
        return None
    return (state[1],)


def _take(
    session: Session, campaign_id: int, batch_size: int, mark: int | None, count: int
) -> list[tuple[int, int]] | None:
    """Cut up to ``count`` batches above the published mark and move the mark past them by
    compare-and-set, recording them as waiting: the batches to publish ([] when no rows are
    left), or None when another refill moved the mark first."""
    batches = _cut(session, campaign_id, batch_size, after=mark, batches=count)
    if not batches:
        return []
    connection = session.connection()
    moved = connection.execute(
        _move_mark_statement(mark is None),
        {"mark_campaign": campaign_id, "mark_from": mark, "mark_to": batches[-1][1]},
    )
    if not moved.rowcount:
        return None
    connection.execute(
        _insert_published(),
        [
            {"campaign_id": campaign_id, "first_id": first, "last_id": last}
            for first, last in batches
        ],
    )
    return batches


@functools.cache
def _insert_published() -> Insert:
    return insert(_published)


def sending_campaigns(session: Session) -> list[int]:
    """Ids of the campaigns now sending (beat refills their windows)."""
    return list(
        session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.SENDING))
    )
