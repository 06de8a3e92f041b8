"""The consent ledger: append-only history, whose latest row per (address, scope) decides."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppression.events import Hit, record_event
from suppression.models import Consent, ConsentState, ConsentStatus, Scope
from suppression.sql import insert_for


class ConsentOutcome(enum.StrEnum):
    RECORDED = "recorded"
    UNCHANGED = "unchanged"
    KEPT_OPT_OUT = "kept_opt_out"
    STALE = "stale"


def current_consent(session: Session, address_id: int, scope: Scope) -> ConsentState | None:
    return session.get(ConsentState, (address_id, str(scope)))


def record_consent(
    session: Session,
    address_id: int,
    scope: Scope,
    status: ConsentStatus,
    *,
    source: str,
    occurred_at: datetime,
    recipient_action: bool = False,
    actor: str | None = None,
    hit: Hit | None = None,
    policy_version: str | None = None,
) -> ConsentOutcome:
    """Append a consent change and move the current state to it, when it is one.

    Only the recipient's own action (``recipient_action=True``: the preference page, a signed
    re-subscribe) may turn an opt-out back into an opt-in; an import or a staff tool cannot.
    A change older than the current state, or equal to it, adds nothing.
    """
    state = current_consent(session, address_id, scope)
    if state is not None:
        if state.status == status:
            return ConsentOutcome.UNCHANGED
        if (
            status == ConsentStatus.OPTED_IN
            and state.status == ConsentStatus.OPTED_OUT
            and not recipient_action
        ):
            return ConsentOutcome.KEPT_OPT_OUT
        if occurred_at < state.occurred_at:
            return ConsentOutcome.STALE
    row = Consent(
        address_id=address_id,
        scope=str(scope),
        status=str(status),
        source=source,
        occurred_at=occurred_at,
        actor=actor,
        ip=hit.ip if hit else None,
        policy_version=policy_version,
    )
    session.add(row)
    session.flush()
    upsert = insert_for(session, ConsentState).values(
        address_id=address_id,
        scope=str(scope),
        status=str(status),
        consent_id=row.id,
        occurred_at=occurred_at,
    )
    # A concurrent writer may have moved the state on; only a change at least as new wins.
    upsert = upsert.on_conflict_do_update(
        index_elements=[ConsentState.address_id, ConsentState.scope],
        set_={
            "status": upsert.excluded.status,
            "consent_id": upsert.excluded.consent_id,
            "occurred_at": upsert.excluded.occurred_at,
        },
        where=ConsentState.occurred_at <= upsert.excluded.occurred_at,
    )
    session.execute(upsert)
    if state is not None:
        session.expire(state)
    record_event(
        session,
        "consent_changed",
        address_id=address_id,
        actor=actor,
        hit=hit,
        outcome=str(status),
        scope=str(scope),
        source=source,
    )
    return ConsentOutcome.RECORDED


def consent_history(session: Session, address_id: int) -> list[Consent]:
    stmt = (
        select(Consent)
        .where(Consent.address_id == address_id)
        .order_by(Consent.occurred_at, Consent.id)
    )
    return list(session.scalars(stmt))
