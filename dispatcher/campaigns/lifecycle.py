"""A campaign's status: every transition, and the one place that makes it.

::

    draft ──schedule──> scheduled ──start──> sending ──finish──> done
                          ^   │                │  ^                │
                 resume/  │   └──pause──> paused  └──requeue────── ┘ (resend unknown)
                 requeue  └────────────────┘
    any status but done/cancelled ──cancel──> cancelled

Other modules never write ``Campaign.status``; they ask for a transition here. An illegal one
raises :class:`IllegalTransition` naming the campaign and both statuses, and changes nothing.

Completion is decided race-free (ARCHITECTURE.md, invariant 10): :func:`finish_if_done` locks
the campaign row before it looks at the rows. Two workers recording the last two batches at
once each write their rows, then queue on that lock; the second one's check is a new statement
that starts after the first committed, so it sees every row final and closes the campaign.
:func:`close_finished` is the beat's sweep for anything that still slipped through (rows
stopped by an unsubscribe or expired by the lease).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dispatcher.models import Campaign, CampaignStatus, Delivery, DeliveryStatus
from suppression.models import utcnow

S = CampaignStatus

# to-status -> the statuses it may be reached from
TRANSITIONS: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    # schedule a draft; resume a pause; resend unknown rows of a sending or done campaign
    S.SCHEDULED: frozenset({S.DRAFT, S.PAUSED, S.SENDING, S.DONE}),
    S.SENDING: frozenset({S.SCHEDULED}),
    S.PAUSED: frozenset({S.SCHEDULED, S.SENDING}),
    S.DONE: frozenset({S.SENDING}),
    S.CANCELLED: frozenset({S.DRAFT, S.SCHEDULED, S.SENDING, S.PAUSED}),
}

PENDING = (DeliveryStatus.QUEUED.value, DeliveryStatus.SENDING.value)


class CampaignError(ValueError):
    """A staff request about a campaign that cannot be carried out; the message says why."""


class IllegalTransition(CampaignError):
    """A status change the lifecycle does not allow."""

    def __init__(self, campaign_id: int, current: str, wanted: CampaignStatus) -> None:
        self.campaign_id = campaign_id
        self.current = current
        self.wanted = wanted
        super().__init__(f"campaign {campaign_id} is {current}; it cannot become {wanted.value}")


def allowed(current: str, wanted: CampaignStatus) -> bool:
    return current in {s.value for s in TRANSITIONS.get(wanted, frozenset())}


def get_campaign(session: Session, campaign_id: int, *, for_update: bool = False) -> Campaign:
    stmt = select(Campaign).where(Campaign.id == campaign_id)
    if for_update:
        stmt = stmt.with_for_update(of=Campaign)
    campaign = session.scalar(stmt)
    if campaign is None:
        raise CampaignError(f"no campaign with id {campaign_id}")
    return campaign


def _stamp(values: dict[str, object], wanted: CampaignStatus, now: datetime) -> None:
    if wanted == S.SENDING:
        values["started_at"] = now
    elif wanted in (S.DONE, S.CANCELLED):
        values["finished_at"] = now
    elif wanted == S.SCHEDULED:
        values["finished_at"] = None


def transition(
    session: Session,
    campaign: Campaign,
    wanted: CampaignStatus,
    *,
    now: datetime | None = None,
) -> Campaign:
    """Move ``campaign`` (loaded ``for_update`` by the caller) to ``wanted``, stamping the
    times that go with it; :class:`IllegalTransition` if the table does not allow it."""
    if not allowed(campaign.status, wanted):
        raise IllegalTransition(campaign.id, campaign.status, wanted)
    values: dict[str, object] = {"status": wanted.value}
    _stamp(values, wanted, now or utcnow())
    for name, value in values.items():
        setattr(campaign, name, value)
    session.flush()
    return campaign


def move(
    session: Session, campaign_id: int, wanted: CampaignStatus, *, now: datetime | None = None
) -> Campaign:
    """Lock the campaign's row and make the transition (see :func:`transition`)."""
    return transition(session, get_campaign(session, campaign_id, for_update=True), wanted, now=now)


def start_if_due(session: Session, campaign_id: int, now: datetime | None = None) -> bool:
    """``scheduled`` → ``sending`` once due, in one statement: of two callers at the same
    moment exactly one gets True."""
    now = now or utcnow()
    values: dict[str, object] = {"status": S.SENDING.value}
    _stamp(values, S.SENDING, now)
    result = session.execute(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.status.in_([s.value for s in TRANSITIONS[S.SENDING]]),
            Campaign.scheduled_at <= now,
        )
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def finish_if_done(session: Session, campaign_id: int) -> bool:
    """``sending`` → ``done`` once its fan-out has added every row and none of its rows is
    queued or sending. Race-free: the campaign's row is locked first, so concurrent callers
    decide one after the other, each seeing what the ones before it committed (see the
    module's docstring); the fan-out's last range clears ``fanning_out`` under the same kind
    of lock. The lock is ``FOR NO KEY UPDATE``: it does not wait for the foreign-key checks
    of rows being added to the campaign (the fan-out's ranges, events), so workers are not
    held up by a fan-out still under way."""
    found = session.execute(
        select(Campaign.status, Campaign.fanning_out)
        .where(Campaign.id == campaign_id)
        .with_for_update(key_share=True)
    ).first()
    if found is None:
        return False
    status, fanning_out = found
    if fanning_out or not allowed(status, S.DONE):
        return False
    pending = (
        select(Delivery.id)
        .where(Delivery.campaign_id == campaign_id, Delivery.status.in_(PENDING))
        .exists()
    )
    values: dict[str, object] = {"status": S.DONE.value}
    _stamp(values, S.DONE, utcnow())
    result = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == status, ~pending)
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def close_finished(session: Session) -> list[int]:
    """The sweep: close every ``sending`` campaign whose rows are all final, whatever
    interleaving of workers left it open. Each is decided by :func:`finish_if_done`, under
    its lock. Returns the campaigns closed."""
    sending = session.scalars(select(Campaign.id).where(Campaign.status == S.SENDING.value))
    return [cid for cid in list(sending) if finish_if_done(session, cid)]
