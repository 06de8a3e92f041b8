"""Retention: personal data that has served its purpose is removed on a schedule.

Run by beat and by ``dispatcher retention run [--dry-run]``; each window is a setting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from dispatcher.inbound.retention import prune_raw
from dispatcher.models import AffiliateRelease, AffiliateShare, WebFailure, WebHitTally
from dispatcher.privacy.files import forget_export_files
from dispatcher.settings import Settings
from suppression.events import record_event
from suppression.models import Event, utcnow

# Recipient-facing hits whose IP and browser the hit window covers.
HIT_KINDS = ("web_hit",)


@dataclass(frozen=True)
class RetentionReport:
    hits_anonymised: int
    export_files_removed: int
    shares_removed: int
    # Spent counters of refused web requests (they name client networks).
    web_counters_removed: int = 0
    # Raw bounce and complaint reports past inbound_keep_days (the rows stay).
    inbound_raw_removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_retention(
    session: Session, settings: Settings, *, now: datetime | None = None, dry_run: bool = False
) -> RetentionReport:
    now = now or utcnow()
    hit_cutoff = now - timedelta(days=settings.retention_hit_days)
    old_hits = (
        Event.kind.in_(HIT_KINDS),
        Event.occurred_at < hit_cutoff,
        or_(Event.ip.is_not(None), Event.user_agent.is_not(None)),
    )
    export_cutoff = now - timedelta(days=settings.retention_export_days)
    share_cutoff = now - timedelta(days=settings.retention_share_days)
    old_shares = AffiliateShare.release_id.in_(
        select(AffiliateRelease.id).where(AffiliateRelease.created_at < share_cutoff)
    )
    # A failure window is at most an hour; tallies are page hits and share their window.
    old_failures = WebFailure.window_start < (now - timedelta(days=1)).timestamp()
    old_tallies = WebHitTally.minute < hit_cutoff
    files = forget_export_files(
        session, AffiliateRelease.created_at < export_cutoff, dry_run=dry_run
    )
    if dry_run:
        hit_count = session.scalar(select(func.count()).where(*old_hits)) or 0
        share_count = session.scalar(select(func.count()).where(old_shares)) or 0
        counters = sum(
            session.scalar(select(func.count()).where(w)) or 0 for w in (old_failures, old_tallies)
        )
        raw = prune_raw(session, settings, dry_run=True)
        return RetentionReport(hit_count, files, share_count, counters, raw)
    hits = session.execute(
        update(Event).where(*old_hits).values(ip=None, user_agent=None, fold_key=None)
    )
    shares = session.execute(delete(AffiliateShare).where(old_shares))
    counters = 0
    for table, old in ((WebFailure, old_failures), (WebHitTally, old_tallies)):
        removed = session.execute(delete(table).where(old))
        counters += int(removed.rowcount or 0)  # type: ignore[attr-defined]
    report = RetentionReport(
        int(hits.rowcount or 0),  # type: ignore[attr-defined]
        files,
        int(shares.rowcount or 0),  # type: ignore[attr-defined]
        counters,
        prune_raw(session, settings),
    )
    if any(report.as_dict().values()):
        record_event(
            session, "retention_applied", actor="retention", outcome="applied", **report.as_dict()
        )
    return report
