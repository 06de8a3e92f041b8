"""Throttling: a global messages-per-second limit and one per recipient domain.

Each batch reserves its slots before sending, in ONE upsert for the global key and every
domain of the batch (GCRA-style virtual scheduling: a key's ``next_at`` moves forward by
``count / rate`` from ``max(next_at, now)``). The sender then spaces its messages inside the
windows it got. Reservations live in the database every worker shares, so the limits hold
across workers and machines.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import case
from sqlalchemy.orm import Session

from dispatcher.models import RateLimit
from suppression.sql import insert_for

GLOBAL_KEY = "global"


@dataclass(frozen=True)
class Limits:
    per_second: float = 0.0
    per_domain_per_second: float = 0.0

    @property
    def active(self) -> bool:
        return self.per_second > 0 or self.per_domain_per_second > 0


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def reserve(session: Session, costs: dict[str, float], now: float) -> dict[str, float]:
    """Reserve ``costs`` (seconds of each key's capacity) from ``now``; returns, per key, the
    time at which this reservation's window starts."""
    if not costs:
        return {}
    stmt = insert_for(session, RateLimit).values(
        [{"key": k, "next_at": now + c, "last_cost": c} for k, c in sorted(costs.items())]
    )
    moved = RateLimit.next_at + stmt.excluded.last_cost
    stmt = stmt.on_conflict_do_update(
        index_elements=[RateLimit.key],
        set_={
            "next_at": case((moved > stmt.excluded.next_at, moved), else_=stmt.excluded.next_at),
            "last_cost": stmt.excluded.last_cost,
        },
    ).returning(RateLimit.key, RateLimit.next_at, RateLimit.last_cost)
    return {key: next_at - cost for key, next_at, cost in session.execute(stmt)}


def schedule(
    session: Session, addresses: Sequence[str], limits: Limits, now: float | None = None
) -> list[float]:
    """For each address, in order, the earliest time (epoch seconds) it may be sent."""
    now = time.time() if now is None else now
    if not limits.active or not addresses:
        return [now] * len(addresses)
    costs: dict[str, float] = {}
    if limits.per_second > 0:
        costs[GLOBAL_KEY] = len(addresses) / limits.per_second
    domains = Counter(domain_of(a) for a in addresses)
    if limits.per_domain_per_second > 0:
        for domain, count in domains.items():
            costs[f"domain:{domain}"] = count / limits.per_domain_per_second
    starts = reserve(session, costs, now)
    times: list[float] = []
    seen: defaultdict[str, int] = defaultdict(int)
    for index, address in enumerate(addresses):
        at = now
        if limits.per_second > 0:
            at = max(at, starts[GLOBAL_KEY] + index / limits.per_second)
        if limits.per_domain_per_second > 0:
            domain = domain_of(address)
            at = max(at, starts[f"domain:{domain}"] + seen[domain] / limits.per_domain_per_second)
            seen[domain] += 1
        times.append(at)
    return times


def wait_until(at: float, sleep: Callable[[float], None] = time.sleep) -> None:
    delay = at - time.time()
    if delay > 0:
        sleep(delay)


class Pacer:
    """Spaces one batch's messages inside the slots reserved for them.

    A sender that falls behind its slots (a slow SMTP reply, a busy core) does not catch up
    in a burst: its remaining messages get fresh slots, so the fleet-wide rate holds.
    """

    def __init__(
        self,
        limits: Limits,
        reserve: Callable[[Sequence[str]], list[float]],
        addresses: Sequence[str],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``sleep``: how to wait for a slot. A batch's first slot can be minutes away
        (behind other workers' reservations); the sender passes a sleep that keeps its
        claim alive meanwhile (``dispatcher.sending.batch``)."""
        self.limits = limits
        self.reserve = reserve
        self.sleep = sleep
        self.addresses = list(addresses)
        self.times = reserve(self.addresses) if limits.active else []
        rates = [r for r in (limits.per_second, limits.per_domain_per_second) if r > 0]
        self.slack = 1 / max(rates) if rates else 0.0

    def wait(self, index: int) -> None:
        if not self.limits.active:
            return
        if time.time() > self.times[index] + self.slack:
            self.times[index:] = self.reserve(self.addresses[index:])
        wait_until(self.times[index], self.sleep)
