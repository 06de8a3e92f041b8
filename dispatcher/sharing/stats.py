"""Aggregate statistics that may be shared: counts only, nobody identifiable.

No address, name or contact id appears: rows are grouped by campaign (its id and name, which
staff chose), day and outcome (delivery status, with the skip reason where there is one).

Small cells. Any count from 1 to k-1 is withheld (primary suppression). A withheld cell could
still be worked out by subtraction from a total that is published or known (complementary
disclosure), so every total is treated as a constraint: a campaign-day's deliveries (its size
may be known, e.g. announced), a campaign's deliveries over all days, the messages sent over
all campaigns (published in the summary), and the contacts by marketing consent state (whose
total is published). Whenever a constraint holds exactly one withheld cell, its smallest
visible cell is withheld too, repeated until no constraint has a lone withheld cell (secondary
suppression). A total that cannot be protected that way is itself withheld.

What this does not protect against, documented rather than handled: solving several
overlapping constraints together (linear programming over the whole table), and differencing
two reports taken at different times (a contact count that grows by one between two runs).
Publish reports at a fixed cadence and keep k well above 1 for the first; the second is why
these are counts of deliveries and consent states, not of events about single people.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.models import Campaign, Contact, Delivery
from suppression.models import ConsentState, Event, Scope

# Statuses and reasons are short codes; anything else is reported as "other", never verbatim.
_CODE = re.compile(r"^[a-z][a-z0-9_:]{0,40}$")
_PLAIN_STATUSES = ("queued", "sending", "sent")
CONSENT_STATES = ("opted_in", "opted_out", "not_asked")


@dataclass
class Cell:
    """One published count, withheld or not."""

    campaign: str
    day: str
    outcome: str
    value: int
    withheld: bool = False

    @property
    def count(self) -> int | None:
        return None if self.withheld else self.value

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "day": self.day,
            "outcome": self.outcome,
            "count": self.count,
        }


def protect(cells: list[Cell], constraints: Iterable[list[Cell]], k: int) -> None:
    """Withhold every cell under ``k`` and enough others that no constraint (a set of cells
    whose sum is known) has exactly one withheld cell. Cells of zero are absent, not small."""
    groups = [g for g in constraints if g]
    for cell in cells:
        if 0 < cell.value < k:
            cell.withheld = True
    changed = True
    while changed:
        changed = False
        for group in groups:
            hidden = [c for c in group if c.withheld]
            shown = [c for c in group if not c.withheld]
            if len(hidden) == 1 and shown:
                min(shown, key=lambda c: c.value).withheld = True
                changed = True


def _outcome(status: str, reason: str | None) -> str:
    status = status if _CODE.match(status or "") else "other"
    if status in _PLAIN_STATUSES or not reason:
        return status
    return f"{status}:{reason if _CODE.match(reason) else 'other'}"


def delivery_cells(session: Session) -> list[Cell]:
    """Deliveries counted per campaign, day (finished, else created) and outcome."""
    day = func.date(func.coalesce(Delivery.finished_at, Delivery.created_at))
    rows = session.execute(
        select(Campaign.id, Campaign.name, day, Delivery.status, Delivery.skip_reason, func.count())
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .group_by(Campaign.id, Campaign.name, day, Delivery.status, Delivery.skip_reason)
        .order_by(Campaign.id, day, Delivery.status, Delivery.skip_reason)
    ).all()
    merged: dict[tuple[str, str, str], Cell] = {}
    for campaign_id, name, when, status, reason, count in rows:
        key = (f"{campaign_id}:{name}", str(when), _outcome(status, reason))
        cell = merged.setdefault(key, Cell(*key, value=0))
        cell.value += int(count)
    return list(merged.values())


def _delivery_constraints(cells: list[Cell]) -> list[list[Cell]]:
    by_day: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    by_campaign: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        by_day[(cell.campaign, cell.day)].append(cell)
        by_campaign[cell.campaign].append(cell)
    sent = [c for c in cells if c.outcome == "sent"]
    return [*by_day.values(), *by_campaign.values(), sent]


def _consent_cells(session: Session) -> list[Cell]:
    states = dict(
        session.execute(
            select(ConsentState.status, func.count())
            .join(Contact, Contact.address_id == ConsentState.address_id)
            .where(ConsentState.scope == str(Scope.MARKETING))
            .group_by(ConsentState.status)
        ).all()
    )
    contacts = int(session.scalar(select(func.count()).select_from(Contact)) or 0)
    opted_in, opted_out = int(states.get("opted_in", 0)), int(states.get("opted_out", 0))
    values = (opted_in, opted_out, contacts - opted_in - opted_out)
    return [Cell("", "", f"marketing_{s}", v) for s, v in zip(CONSENT_STATES, values, strict=True)]


def _rate(numerator: int | None, denominator: int | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


def _lone(total: int, group: list[Cell], k: int) -> int | None:
    """A published total, unless it is small or would reveal a withheld cell on its own."""
    if 0 < total < k:
        return None
    hidden = [c for c in group if c.withheld]
    if len(hidden) == 1 and len(group) == 1:
        return None
    return total


def report(session: Session, k: int) -> dict[str, Any]:
    """The shareable report: a summary and the delivery cells, small cells withheld."""
    if k < 1:
        raise ValueError("k must be at least 1")
    deliveries = delivery_cells(session)
    protect(deliveries, _delivery_constraints(deliveries), k)
    consent = _consent_cells(session)
    protect(consent, [consent], k)
    contacts_total = sum(c.value for c in consent)
    sent_cells = [c for c in deliveries if c.outcome == "sent"]
    contacts = _lone(contacts_total, consent, k)
    sent = _lone(sum(c.value for c in sent_cells), sent_cells, k)
    unsubscribed = int(
        session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.kind == "unsubscribed", Event.outcome == "suppressed")
        )
        or 0
    )
    unsubscribes = None if 0 < unsubscribed < k else unsubscribed
    # What came back (dispatcher/inbound), as totals over all campaigns, small ones withheld.
    feedback = dict(
        session.execute(
            select(Delivery.feedback, func.count())
            .where(Delivery.feedback.in_(["hard_bounce", "soft_bounce", "complaint"]))
            .group_by(Delivery.feedback)
        ).all()
    )
    bounces, softs, complaints = (
        int(feedback.get(f, 0)) for f in ("hard_bounce", "soft_bounce", "complaint")
    )
    hard_bounces = None if 0 < bounces < k else bounces
    soft_bounces = None if 0 < softs < k else softs
    complained = None if 0 < complaints < k else complaints
    summary: dict[str, Any] = {"contacts": contacts}
    summary.update({c.outcome: c.count for c in consent})
    opted_in = consent[0].count
    summary.update(
        {
            "opt_in_rate": _rate(opted_in, contacts) if contacts is not None else None,
            "messages_sent": sent,
            "unsubscribes": unsubscribes,
            "unsubscribe_rate_per_message": _rate(unsubscribes, sent) if sent else None,
            "hard_bounces": hard_bounces,
            "hard_bounce_rate_per_message": _rate(hard_bounces, sent) if sent else None,
            "soft_bounces": soft_bounces,
            "soft_bounce_rate_per_message": _rate(soft_bounces, sent) if sent else None,
            "complaints": complained,
            "complaint_rate_per_message": _rate(complained, sent) if sent else None,
            "min_cell": k,
        }
    )
    return {"summary": summary, "deliveries": [c.as_dict() for c in deliveries]}
