"""The audit trail: one function writes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from suppression.models import Event


@dataclass(frozen=True)
class Hit:
    """Who touched a recipient-facing endpoint, as the security log records it."""

    ip: str | None = None
    user_agent: str | None = None
    source: str = "web"


def record_event(
    session: Session,
    kind: str,
    *,
    address_id: int | None = None,
    actor: str | None = None,
    hit: Hit | None = None,
    outcome: str | None = None,
    **detail: Any,
) -> Event:
    """Add an audit event to the session (committed with the change it describes)."""
    event = Event(
        kind=kind,
        address_id=address_id,
        actor=actor,
        ip=hit.ip if hit else None,
        user_agent=(hit.user_agent or "")[:512] if hit else None,
        outcome=outcome,
        detail=detail,
    )
    session.add(event)
    return event
