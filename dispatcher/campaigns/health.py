"""Is a campaign in trouble, and why: the one answer ``campaign status``, ``campaign list``,
the staff console and the metrics all read.

:func:`campaign_health` puts together the campaign's open task errors
(:mod:`dispatcher.campaigns.problems`), whether it is still ``scheduled`` well after its time,
and, given a :class:`~dispatcher.campaigns.fleet.Fleet` from ``probe_fleet``, whether the
broker answers, a beat was seen lately and a worker consumes the campaign's queue. It only
reads; it changes no status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.campaigns import counts
from dispatcher.campaigns.fleet import (
    BEAT,
    WORKER,
    Fleet,
    campaign_queue,
    fresh,
    heartbeat_every,
    heartbeats,
)
from dispatcher.campaigns.problems import campaigns_with_open_problems, open_task_problems
from dispatcher.campaigns.services import get_campaign
from dispatcher.models import Campaign, CampaignStatus, DeliveryStatus
from dispatcher.settings import Settings
from suppression.models import utcnow


@dataclass(frozen=True)
class Problem:
    """One thing wrong, said so a staff member knows what to check."""

    code: str
    message: str
    tasks: int = 0  # how many of the campaign's tasks report it (0: a diagnosis)
    since: datetime | None = None
    last_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "tasks": self.tasks,
            "since": self.since.isoformat() if self.since else None,
            "last_at": self.last_at.isoformat() if self.last_at else None,
        }


@dataclass
class CampaignHealth:
    campaign_id: int
    status: str
    queue: str
    problems: list[Problem] = field(default_factory=list)
    beat_seen_at: datetime | None = None
    beat_fresh: bool = False
    workers: list[str] | None = None  # consuming the queue; None when not checked
    workers_checked_by: str | None = None  # "celery inspect" | "heartbeats"
    broker_reachable: bool | None = None  # None when not checked

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": [p.as_dict() for p in self.problems],
            "beat": {
                "seen_at": self.beat_seen_at.isoformat() if self.beat_seen_at else None,
                "recent": self.beat_fresh,
            },
            "workers": {
                "queue": self.queue,
                "consuming": self.workers,
                "checked_by": self.workers_checked_by,
            },
            "broker": {"reachable": self.broker_reachable},
        }


def overdue_after(settings: Settings) -> timedelta:
    """A campaign still ``scheduled`` this long after its time has not been started (the
    beat looks every ``beat_interval_seconds``): a few intervals."""
    return timedelta(seconds=3 * heartbeat_every(settings))


_CAUSES = {
    "broker_unreachable": "the broker cannot be reached",
    "no_beat": "no beat is running",
    "beat_cannot_publish": "the beat cannot queue work",
    "no_worker": "no worker consumes its queue",
}


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def campaign_health(
    session: Session,
    settings: Settings,
    campaign_id: int,
    *,
    fleet: Fleet | None = None,
    now: datetime | None = None,
) -> CampaignHealth:
    """The campaign's problems, most pressing first. Without ``fleet`` (see
    ``dispatcher.campaigns.fleet.probe_fleet``) only what the database knows is used: task
    errors, heartbeats, and whether it is overdue. Raises nothing for a healthy campaign;
    an unknown id gives ``CampaignError`` via the caller's lookup."""
    now = now or utcnow()
    campaign = get_campaign(session, campaign_id)
    queue = campaign_queue(settings, campaign.purpose)
    health = CampaignHealth(campaign_id, campaign.status, queue)

    beats = heartbeats(session, BEAT)
    if beats:
        health.beat_seen_at = beats[0].seen_at
        health.beat_fresh = fresh(beats[0].seen_at, settings, now)
    if fleet is not None:
        health.broker_reachable = fleet.broker_problem is None
        health.workers = fleet.consuming(queue)
        health.workers_checked_by = "celery inspect" if health.workers is not None else None
        if health.workers is None and fleet.broker_problem is None:
            health.workers = sorted(
                h.name
                for h in heartbeats(session, WORKER)
                if fresh(h.seen_at, settings, now) and queue in (h.detail or "").split(",")
            )
            health.workers_checked_by = "heartbeats"

    problems = health.problems
    for task in open_task_problems(session, campaign_id):
        problems.append(Problem(task.code, task.message, task.tasks, task.first_at, task.last_at))

    scheduled_at = campaign.scheduled_at
    late = (
        campaign.status == CampaignStatus.SCHEDULED
        and scheduled_at is not None
        and scheduled_at <= now - overdue_after(settings)
    )
    queued = 0
    if campaign.status == CampaignStatus.SENDING:
        found = counts.current(session, [campaign_id])[campaign_id]
        queued = found.by_status.get(DeliveryStatus.QUEUED.value, 0)
    if not (late or queued):
        return health

    causes: list[Problem] = []
    if fleet is not None and fleet.broker_problem:
        causes.append(Problem("broker_unreachable", fleet.broker_problem))
    if late:
        if not health.beat_fresh:
            seen = (
                f"has been seen since {health.beat_seen_at:%Y-%m-%d %H:%M:%S} UTC"
                if health.beat_seen_at
                else "has ever been seen"
            )
            causes.append(
                Problem(
                    "no_beat",
                    f"no beat {seen}: nothing starts due campaigns; run one "
                    "`dispatcher beat` per deployment (or one worker with -B)",
                    since=health.beat_seen_at,
                )
            )
        elif beats[0].problem and beats[0].problem_at:
            causes.append(
                Problem("beat_cannot_publish", beats[0].problem, since=beats[0].problem_at)
            )
    if health.workers == [] and (late or queued):
        what = f"{queued} messages are queued and" if queued else "its time has come and"
        causes.append(
            Problem(
                "no_worker",
                f"{what} no worker consumes queue {queue!r}: start `dispatcher worker` "
                f"(one that consumes {queue!r})",
            )
        )
    if late and scheduled_at is not None:
        likely = "; ".join(_CAUSES[c.code] for c in causes) or (
            "not known: the broker, a beat and a worker answer; see the worker log"
        )
        problems.insert(
            0,
            Problem(
                "overdue",
                f"still scheduled {_ago(now - scheduled_at)} after its time "
                f"({scheduled_at:%Y-%m-%d %H:%M:%S} UTC); likely cause: {likely}",
                since=scheduled_at,
            ),
        )
    problems.extend(causes)
    return health


def campaigns_in_trouble(
    session: Session, settings: Settings, now: datetime | None = None
) -> dict[int, str]:
    """Campaign id → the first word of its trouble, from the database alone (no broker
    probe): open task errors (a cancelled campaign's are history), or still scheduled well
    after its time."""
    now = now or utcnow()
    cancelled = set(
        session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.CANCELLED))
    )
    trouble = {
        campaign_id: "errors" for campaign_id in campaigns_with_open_problems(session) - cancelled
    }
    for campaign_id in session.scalars(
        select(Campaign.id).where(
            Campaign.status == CampaignStatus.SCHEDULED,
            Campaign.scheduled_at <= now - overdue_after(settings),
        )
    ):
        trouble[campaign_id] = "overdue"
    return trouble
