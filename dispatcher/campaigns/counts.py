"""How many deliveries of a campaign are in each status (and skip reason), without reading
the delivery rows.

Every statement that moves delivery rows from one status to another also writes the change
here, in the same transaction (:func:`record`), so the counts can never disagree with the rows
once both are committed: a rollback drops both. The ledger is insert-only (see
:class:`dispatcher.models.CampaignCount`), one INSERT per transaction however many rows moved;
:func:`fold` merges it per campaign, status, reason and minute, which also keeps the send
rate and the sends-per-minute chart readable from it.

The writers, each with its change: fan-out (``+queued``), the claim (``queued`` → ``sending``
or ``suppressed``), orphaned and expired claims (``sending`` → ``unknown``), the batch's
record step (``sending`` → ``sent``/``failed``/``unknown``/``queued``), ``stop_queued`` on an
unsubscribe or a suppression, cancel (``queued`` → ``cancelled``) and resend-unknown
(``unknown`` → ``queued``). :func:`verify` compares the ledger with ``count(*)`` of the rows
(``dispatcher doctor``, ``campaign status --verify-counts``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, delete, func, insert, literal, select, union_all
from sqlalchemy.orm import Session

from dispatcher.models import Campaign, CampaignCount, Delivery, DeliveryStatus
from suppression.models import utcnow

_LEDGER = CampaignCount.metadata.tables[CampaignCount.__tablename__]

# (campaign id, status, skip reason or "") -> change in the number of rows
Key = tuple[int, str, str]

# Rows younger than this stay as written, so the rate over the last minute is exact.
FOLD_AFTER = timedelta(minutes=2)
# A campaign is folded once it has this many ledger rows (a batch writes about four).
FOLD_ABOVE = 200


class Changes(Counter[Key]):
    """The count changes of one transaction, written by :func:`record`."""

    def move(
        self,
        campaign_id: int,
        before: str,
        after: str,
        count: int = 1,
        *,
        reason_before: str | None = None,
        reason_after: str | None = None,
    ) -> None:
        if count:
            self[(campaign_id, before, reason_before or "")] -= count
            self[(campaign_id, after, reason_after or "")] += count

    def add(self, campaign_id: int, status: str, count: int, reason: str | None = None) -> None:
        if count:
            self[(campaign_id, status, reason or "")] += count


def record(session: Session, changes: Mapping[Key, int]) -> None:
    """Write the changes in the caller's transaction: one INSERT, nothing when nothing moved."""
    now = utcnow()
    rows = [
        {"campaign_id": c, "status": s, "reason": r, "change": n, "at": now}
        for (c, s, r), n in sorted(changes.items())
        if n
    ]
    if rows:
        # On the table: the ORM's bulk insert costs twice the CPU for the same INSERT.
        session.connection().execute(insert(_LEDGER), rows)


def moved_insert(moved: Any, before: str, after: str, at: Any) -> Any:
    """:func:`record` as SQL, for a statement that moves rows and writes their counts in the
    same round trip: ``moved`` (a CTE of the rows moved, with ``campaign_id`` and the
    ``reason`` after the move) left ``before`` for ``after``. One INSERT; nothing when
    nothing moved."""
    left = select(moved.c.campaign_id, literal(before), literal(""), -func.count(), at).group_by(
        moved.c.campaign_id
    )
    reason = func.coalesce(moved.c.reason, "")
    arrived = select(moved.c.campaign_id, literal(after), reason, func.count(), at).group_by(
        moved.c.campaign_id, reason
    )
    return insert(CampaignCount).from_select(
        ["campaign_id", "status", "reason", "change", "at"], union_all(left, arrived)
    )


@dataclass
class Counts:
    """A campaign's deliveries per status and per skip reason."""

    by_status: dict[str, int]
    by_reason: dict[str, int]


def current(session: Session, campaign_ids: Iterable[int]) -> dict[int, Counts]:
    """The counts of each campaign, from the ledger (every status present, zeros included)."""
    ids = list(campaign_ids)
    found = {c: Counts({s.value: 0 for s in DeliveryStatus}, {}) for c in ids}
    if not ids:
        return found
    rows = session.execute(
        select(
            CampaignCount.campaign_id,
            CampaignCount.status,
            CampaignCount.reason,
            func.sum(CampaignCount.change),
        )
        .where(CampaignCount.campaign_id.in_(ids))
        .group_by(CampaignCount.campaign_id, CampaignCount.status, CampaignCount.reason)
    )
    for campaign_id, status, reason, total in rows:
        counts = found[campaign_id]
        total = int(total or 0)
        counts.by_status[status] = counts.by_status.get(status, 0) + total
        if reason and total:
            counts.by_reason[reason] = counts.by_reason.get(reason, 0) + total
    for counts in found.values():
        counts.by_reason = dict(sorted((r, n) for r, n in counts.by_reason.items() if n))
    return found


def finished_since(session: Session, campaign_id: int, since: datetime) -> int:
    """Rows that reached sent, failed, suppressed or unknown since ``since`` (the send rate)."""
    total = session.scalar(
        select(func.coalesce(func.sum(CampaignCount.change), 0)).where(
            CampaignCount.campaign_id == campaign_id,
            CampaignCount.at >= since,
            CampaignCount.change > 0,
            CampaignCount.status.in_(
                [
                    DeliveryStatus.SENT.value,
                    DeliveryStatus.FAILED.value,
                    DeliveryStatus.SUPPRESSED.value,
                    DeliveryStatus.UNKNOWN.value,
                ]
            ),
        )
    )
    return int(total or 0)


def _minute(session: Session, column: Any) -> Any:
    if session.get_bind().dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d %H:%M", column)
    return func.to_char(func.date_trunc("minute", column), "YYYY-MM-DD HH24:MI")


def sent_per_minute(session: Session, campaign_id: int) -> list[tuple[str, int]]:
    """Messages recorded as sent per minute (UTC), oldest first. ``sent`` only ever grows,
    so the ledger's increments are the sends."""
    minute = _minute(session, CampaignCount.at)
    rows = session.execute(
        select(minute.label("minute"), func.sum(CampaignCount.change))
        .where(
            CampaignCount.campaign_id == campaign_id,
            CampaignCount.status == DeliveryStatus.SENT.value,
        )
        .group_by("minute")
        .order_by("minute")
    )
    return [(str(m), int(n)) for m, n in rows if n]


def _lock(session: Session, campaign_id: int) -> None:
    session.execute(select(Campaign.id).where(Campaign.id == campaign_id).with_for_update())


def fold(session: Session, campaign_id: int, now: datetime | None = None) -> int:
    """Merge the campaign's ledger rows older than :data:`FOLD_AFTER` into one per status,
    reason and minute. Safe beside writers and other folds: it deletes only the rows it
    read (``DELETE … RETURNING``) and writes their sums back in the same transaction, so
    the total never changes. Folds and recounts of one campaign take turns on its row (a
    recount that did not wait would miss the rows a fold writes back, and count twice).
    Returns how many rows it removed."""
    cutoff = (now or utcnow()) - FOLD_AFTER
    _lock(session, campaign_id)
    gone = session.execute(
        delete(CampaignCount)
        .where(CampaignCount.campaign_id == campaign_id, CampaignCount.at < cutoff)
        .returning(
            CampaignCount.status, CampaignCount.reason, CampaignCount.change, CampaignCount.at
        )
    ).all()
    merged: Counter[tuple[str, str, datetime]] = Counter()
    for status, reason, change, at in gone:
        merged[(status, reason, at.replace(second=0, microsecond=0))] += change
    rows = [
        {"campaign_id": campaign_id, "status": s, "reason": r, "change": n, "at": at}
        for (s, r, at), n in sorted(merged.items())
        if n
    ]
    if rows:
        session.execute(insert(CampaignCount), rows)
    return len(gone) - len(rows)


def fold_busy(session: Session, now: datetime | None = None) -> int:
    """Fold every campaign whose ledger has grown past :data:`FOLD_ABOVE` rows (beat)."""
    busy = session.scalars(
        select(CampaignCount.campaign_id)
        .group_by(CampaignCount.campaign_id)
        .having(func.count() > FOLD_ABOVE)
    ).all()
    return sum(fold(session, campaign_id, now) for campaign_id in busy)


@dataclass
class Mismatch:
    campaign_id: int
    status: str
    reason: str
    counted: int  # count(*) of the rows
    ledger: int  # the counters

    def __str__(self) -> str:
        what = f"{self.status}" + (f" ({self.reason})" if self.reason else "")
        return (
            f"campaign {self.campaign_id}: {what}: the counters say {self.ledger}, "
            f"the rows {self.counted}"
        )


def verify(session: Session, campaign_ids: Iterable[int] | None = None) -> list[Mismatch]:
    """Compare the counters with ``count(*)`` of the delivery rows, in ONE statement so both
    sides come from the same snapshot even while batches run (it reads every row of the
    campaigns: a check, not a page)."""
    ids = list(campaign_ids) if campaign_ids is not None else None
    reason = func.coalesce(Delivery.skip_reason, "")
    rows = select(
        Delivery.campaign_id.label("c"),
        Delivery.status.label("s"),
        reason.label("r"),
        func.count().label("counted"),
        literal(0, BigInteger).label("ledger"),
    ).group_by(Delivery.campaign_id, Delivery.status, reason)
    ledger = select(
        CampaignCount.campaign_id,
        CampaignCount.status,
        CampaignCount.reason,
        literal(0, BigInteger),
        func.sum(CampaignCount.change),
    ).group_by(CampaignCount.campaign_id, CampaignCount.status, CampaignCount.reason)
    if ids is not None:
        rows = rows.where(Delivery.campaign_id.in_(ids))
        ledger = ledger.where(CampaignCount.campaign_id.in_(ids))
    both = union_all(rows, ledger).subquery()
    compared = (
        select(both.c.c, both.c.s, both.c.r, func.sum(both.c.counted), func.sum(both.c.ledger))
        .group_by(both.c.c, both.c.s, both.c.r)
        .having(func.sum(both.c.counted) != func.sum(both.c.ledger))
        .order_by(both.c.c, both.c.s, both.c.r)
    )
    return [
        Mismatch(int(c), str(st), str(r), int(n or 0), int(m or 0))
        for c, st, r, n, m in session.execute(compared)
    ]


def rebuild(session: Session, campaign_id: int) -> None:
    """Replace a campaign's counters by a count of its rows. Only for a campaign nothing is
    moving (a repair after :func:`verify` found a difference, a database filled by hand)."""
    _lock(session, campaign_id)
    session.execute(delete(CampaignCount).where(CampaignCount.campaign_id == campaign_id))
    changes = Changes()
    for status, reason, total in session.execute(
        select(Delivery.status, Delivery.skip_reason, func.count())
        .where(Delivery.campaign_id == campaign_id)
        .group_by(Delivery.status, Delivery.skip_reason)
    ):
        changes.add(campaign_id, status, int(total), reason)
    record(session, changes)


__all__ = [
    "Changes",
    "Counts",
    "Mismatch",
    "current",
    "finished_since",
    "fold",
    "fold_busy",
    "moved_insert",
    "rebuild",
    "record",
    "sent_per_minute",
    "verify",
]
