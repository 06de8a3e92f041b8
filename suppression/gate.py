"""The gate: the one place that decides whether an address may receive a message.

It is a SQL expression, not a Python check, so the dispatcher can apply it inside the very
statement that claims rows for sending: there is no window between deciding and claiming, and
no query per recipient. Any error evaluating it aborts that statement, so nothing is claimed
and nothing is sent (fail closed).
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select

from suppression.models import (
    GLOBAL_SCOPE,
    ConsentState,
    ConsentStatus,
    Reason,
    Scope,
    Suppression,
    affiliate_scope,
)


class Purpose(enum.StrEnum):
    """Why a campaign writes: what consent it needs and which suppressions stop it."""

    MARKETING = "marketing"
    SERVICE_NOTICE = "service_notice"


# Skip reasons that are not suppression reasons.
NOT_ASKED = "not_asked"
OPTED_OUT = "opted_out"

# A service notice ("we changed our terms") ignores marketing consent and link unsubscribes,
# but not the signals that the person or the mail system asked for no mail at all.
SERVICE_BLOCKING_REASONS = (
    Reason.HARD_BOUNCE,
    Reason.REPEATED_SOFT_BOUNCE,
    Reason.COMPLAINT,
    Reason.POSTAL_REQUEST,
    Reason.LEGAL,
    Reason.ERASED,
)


def _active(address_id: Any) -> ColumnElement[bool]:
    return and_(Suppression.address_id == address_id, Suppression.lifted_at.is_(None))


def _suppression_filter(purpose: Purpose) -> ColumnElement[bool]:
    if purpose is Purpose.MARKETING:
        return Suppression.scope.in_([GLOBAL_SCOPE, str(Scope.MARKETING)])
    if purpose is Purpose.SERVICE_NOTICE:
        return or_(
            Suppression.reason.in_([str(r) for r in SERVICE_BLOCKING_REASONS]),
            and_(Suppression.reason == str(Reason.MANUAL), Suppression.scope == GLOBAL_SCOPE),
        )
    raise ValueError(f"unknown purpose {purpose!r}")


def _consent_status(address_id: Any, scope: Scope) -> Any:
    return (
        select(ConsentState.status)
        .where(ConsentState.address_id == address_id, ConsentState.scope == str(scope))
        .scalar_subquery()
    )


def blocking_reason(address_id: Any, purpose: Purpose) -> ColumnElement[str | None]:
    """SQL expression: NULL when ``address_id`` may receive mail of ``purpose``, else why not.

    The reason is the oldest active suppression's reason that applies, else ``not_asked`` or
    ``opted_out`` when the purpose needs consent the address has not given.
    """
    suppressed = (
        select(Suppression.reason)
        .where(_active(address_id), _suppression_filter(purpose))
        .order_by(Suppression.id)
        .limit(1)
        .scalar_subquery()
    )
    if purpose is Purpose.SERVICE_NOTICE:
        return suppressed
    # CASE <status> WHEN …: the consent look-up written (and run) once, not once per branch;
    # a statement that embeds the gate stays short enough for psycopg to keep it parsed.
    no_consent = case(
        {str(ConsentStatus.OPTED_IN): None, str(ConsentStatus.OPTED_OUT): OPTED_OUT},
        value=_consent_status(address_id, Scope.MARKETING),
        else_=NOT_ASKED,
    )
    return func.coalesce(suppressed, no_consent)


def affiliate_shareable(address_id: Any, affiliate_id: int) -> ColumnElement[bool]:
    """SQL predicate: ``address_id`` may appear in the list sent to affiliate ``affiliate_id``.

    Latest marketing AND affiliates consent opted in; no active suppression globally, for
    marketing, for affiliates, or for this affiliate.
    """
    blocked = exists().where(
        _active(address_id),
        Suppression.scope.in_(
            [
                GLOBAL_SCOPE,
                str(Scope.MARKETING),
                str(Scope.AFFILIATES),
                affiliate_scope(affiliate_id),
            ]
        ),
    )
    return and_(
        _consent_status(address_id, Scope.MARKETING) == str(ConsentStatus.OPTED_IN),
        _consent_status(address_id, Scope.AFFILIATES) == str(ConsentStatus.OPTED_IN),
        ~blocked,
    )
