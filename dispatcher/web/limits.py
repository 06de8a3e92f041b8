"""What repeated bad requests may cost: failed credential checks are counted and then
refused before the costly hash, and refused recipient hits are tallied instead of audited
one by one. Counts live in the database, so every web worker process sees the same ones.

Callers are keyed by network, not by address: an IPv6 host holds a whole /64 and could
otherwise take a fresh budget (and a fresh audit row) with every request.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from dispatcher.models import WebFailure, WebHitTally
from suppression.models import utcnow
from suppression.sql import insert_for


@dataclass(frozen=True)
class Budget:
    """At most ``failures`` failed checks per key within ``window`` seconds."""

    failures: int
    window: float


# A person who mistypes a credential needs a few tries; a guesser gets ten per IP network
# per ten minutes, and any number of networks together get fifty per affiliate name.
PER_NETWORK = Budget(failures=10, window=600.0)
PER_AFFILIATE = Budget(failures=50, window=600.0)

# At most this many credential hashes (64 ms of CPU each) run at once in one process, so a
# burst of affiliate requests never takes every thread from the recipient pages.
CHECKS_AT_ONCE = 1
CHECK_WAIT_SECONDS = 5.0
_checks = threading.BoundedSemaphore(CHECKS_AT_ONCE)


class Busy(Exception):
    """Too many credential checks are running in this process; try again shortly."""

    retry_after = 5


def network_of(ip: str | None) -> str:
    """The key a caller is counted under: the IPv4 address, or the IPv6 /64."""
    if not ip:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def failure_keys(ip: str | None, affiliate_name: str | None) -> dict[str, Budget]:
    keys = {f"ip:{network_of(ip)}": PER_NETWORK}
    if affiliate_name:
        keys[f"affiliate:{affiliate_name[:150]}"] = PER_AFFILIATE
    return keys


def retry_after(session: Session, keys: dict[str, Budget], now: float | None = None) -> int:
    """Seconds until a check under ``keys`` is allowed again; 0 when it is allowed now."""
    now = time.time() if now is None else now
    rows = session.execute(
        select(WebFailure.key, WebFailure.window_start, WebFailure.count).where(
            WebFailure.key.in_(list(keys))
        )
    ).all()
    wait = 0.0
    for key, start, count in rows:
        budget = keys[key]
        ends = start + budget.window
        if count >= budget.failures and ends > now:
            wait = max(wait, ends - now)
    return math.ceil(wait)


def count_failure(session: Session, keys: dict[str, Budget], now: float | None = None) -> None:
    """One more failed check under each key (a window that has ended starts again)."""
    now = time.time() if now is None else now
    for key, budget in keys.items():
        stmt = insert_for(session, WebFailure).values(key=key, window_start=now, count=1)
        expired = WebFailure.window_start <= now - budget.window
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["key"],
                set_={
                    "count": case((expired, 1), else_=WebFailure.count + 1),
                    "window_start": case((expired, now), else_=WebFailure.window_start),
                },
            )
        )


@contextmanager
def one_check_at_a_time() -> Iterator[None]:
    """Hold one of this process's credential-check slots; :class:`Busy` after waiting."""
    if not _checks.acquire(timeout=CHECK_WAIT_SECONDS):
        raise Busy
    try:
        yield
    finally:
        _checks.release()


def tally_hit(
    session: Session, ip: str | None, route: str, outcome: str, at: datetime | None = None
) -> int:
    """Count a refused recipient hit; returns how many this key had this minute (1: the
    first, which the caller audits in full)."""
    at = at or utcnow()
    minute = at.replace(second=0, microsecond=0)
    stmt = insert_for(session, WebHitTally).values(
        minute=minute,
        network=network_of(ip),
        route=route[:32],
        outcome=outcome[:64],
        count=1,
        last_at=at,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["minute", "network", "route", "outcome"],
        set_={"count": WebHitTally.count + 1, "last_at": at},
    ).returning(WebHitTally.count)
    return int(session.execute(stmt).scalar_one())
