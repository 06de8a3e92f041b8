"""Aggregate statistics that may be shared: counts only, nobody identifiable.

No address, name or contact id appears. Any count below ``k`` is withheld; where a
campaign-day has exactly one withheld cell, the smallest other cell of that group is
withheld too, so the withheld one cannot be worked out from a known total (complementary
disclosure). Rates are given only when both their counts reach ``k``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.models import Campaign, Contact, Delivery
from suppression.models import ConsentState, Event, Scope


@dataclass
class Cell:
    campaign: str
    day: str
    outcome: str
    count: int | None  # None: withheld

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "day": self.day,
            "outcome": self.outcome,
            "count": self.count,
        }


def delivery_cells(session: Session, k: int) -> list[Cell]:
    day = func.date(func.coalesce(Delivery.finished_at, Delivery.created_at))
    outcome = Delivery.status
    rows = session.execute(
        select(Campaign.name, Campaign.id, day, outcome, Delivery.skip_reason, func.count())
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .group_by(Campaign.name, Campaign.id, day, outcome, Delivery.skip_reason)
        .order_by(Campaign.id, day, outcome, Delivery.skip_reason)
    ).all()
    groups: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for name, campaign_id, when, status, reason, count in rows:
        label = (
            status
            if status in ("sent", "queued", "sending") or not reason
            else f"{status}:{reason}"
        )
        cell = Cell(f"{campaign_id}:{name}", str(when), label, int(count))
        groups[(cell.campaign, cell.day)].append(cell)
    cells: list[Cell] = []
    for group in groups.values():
        _withhold(group, k)
        cells.extend(group)
    return cells


def _withhold(group: list[Cell], k: int) -> None:
    small = [c for c in group if c.count is not None and c.count < k]
    for cell in small:
        cell.count = None
    if len(small) == 1:
        others = sorted((c for c in group if c.count is not None), key=lambda c: c.count or 0)
        if others:
            others[0].count = None


def _rate(numerator: int, denominator: int, k: int) -> float | None:
    if numerator < k or denominator < k:
        return None
    return round(numerator / denominator, 4)


def consent_summary(session: Session, k: int) -> dict[str, Any]:
    contacts = int(session.scalar(select(func.count()).select_from(Contact)) or 0)
    states = dict(
        session.execute(
            select(ConsentState.status, func.count())
            .join(Contact, Contact.address_id == ConsentState.address_id)
            .where(ConsentState.scope == str(Scope.MARKETING))
            .group_by(ConsentState.status)
        ).all()
    )
    opted_in = int(states.get("opted_in", 0))
    opted_out = int(states.get("opted_out", 0))
    unsubscribes = int(
        session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.kind == "unsubscribed", Event.outcome == "suppressed")
        )
        or 0
    )
    sent = int(
        session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sent"))
        or 0
    )

    def shown(n: int) -> int | None:
        return n if n >= k else None

    return {
        "contacts": shown(contacts),
        "marketing_opted_in": shown(opted_in),
        "marketing_opted_out": shown(opted_out),
        "opt_in_rate": _rate(opted_in, contacts, k),
        "unsubscribes": shown(unsubscribes),
        "messages_sent": shown(sent),
        "unsubscribe_rate_per_message": _rate(unsubscribes, sent, k),
        "min_cell": k,
    }


def report(session: Session, k: int) -> dict[str, Any]:
    if k < 1:
        raise ValueError("k must be at least 1")
    return {
        "summary": consent_summary(session, k),
        "deliveries": [c.as_dict() for c in delivery_cells(session, k)],
    }
