"""Unsubscribe and re-subscribe: what a recipient's own click may change, and nothing more."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from suppression.address import mask_address
from suppression.consent import record_consent
from suppression.events import Hit, record_event
from suppression.models import Address, ConsentStatus, Reason, Scope, utcnow
from suppression.sql import core
from suppression.suppressions import (
    RECIPIENT_LIFTABLE,
    active_suppressions,
    add_suppression,
    lift_suppressions,
)
from suppression.tokens import BadToken, LinkPurpose, LinkSubject, TokenOutcome, TokenSigner

# Called inside the unsubscribe's transaction with (session, address_id): stops mail to that
# address that is queued but not yet claimed, and returns how many messages it stopped. The
# dispatcher supplies it; this package knows no delivery table.
StopQueued = Callable[[Session, int], int]


class CannotResubscribe(Exception):
    """The address is suppressed for a reason only staff may lift; the message says so."""


@dataclass(frozen=True)
class UnsubscribeResult:
    address_id: int
    masked_address: str
    campaign_id: int | None
    newly_suppressed: bool
    stopped: int
    suppression_id: int


def resolve_link(
    session: Session, signer: TokenSigner, purpose: LinkPurpose, token: str
) -> tuple[LinkSubject, Address]:
    """Verify a recipient link and load its address; :class:`BadToken` when either fails.

    An unknown address gets the same error as a forged token, so a link reveals nothing.
    """
    subject = signer.read_link(purpose, token)
    row = core(session).execute(_address_by_id(), {"l_address_id": subject.address_id}).first()
    if row is None:
        raise BadToken(TokenOutcome.UNKNOWN_SUBJECT)
    # A plain read (a statement built once), not an ORM load: the callers need its values.
    return subject, Address(id=row.id, address=row.address, created_at=row.created_at)


@cache
def _address_by_id() -> Any:
    columns = Address.__table__.c
    return select(columns.id, columns.address, columns.created_at).where(
        columns.id == bindparam("l_address_id")
    )


def unsubscribe_address(
    session: Session,
    address: Address,
    *,
    stop_queued: StopQueued,
    source: str,
    hit: Hit | None = None,
    campaign_id: int | None = None,
    actor: str | None = None,
    note: str | None = None,
) -> UnsubscribeResult:
    """The one way an address is unsubscribed from marketing, whoever asks: the recipient's
    link or one-click (the caller verified it with :func:`resolve_link`), the preference
    page, staff acting on a request, inbound mail.

    In the caller's transaction: a marketing ``unsubscribe`` suppression, an opt-out in the
    consent ledger, queued deliveries the gate now refuses stopped, an audit event. Repeating
    it adds no second suppression.
    """
    added = add_suppression(
        session,
        address.id,
        scope=str(Scope.MARKETING),
        reason=Reason.UNSUBSCRIBE,
        source=source,
        hit=hit,
        actor=actor,
        note=note or (f"campaign {campaign_id}" if campaign_id else None),
    )
    record_consent(
        session,
        address.id,
        Scope.MARKETING,
        ConsentStatus.OPTED_OUT,
        source=source,
        occurred_at=utcnow(),
        hit=hit,
    )
    stopped = stop_queued(session, address.id)
    record_event(
        session,
        "unsubscribed",
        address_id=address.id,
        hit=hit,
        actor=actor,
        outcome="suppressed" if added.created else "already_suppressed",
        campaign_id=campaign_id,
        stopped=stopped,
        source=source,
    )
    return UnsubscribeResult(
        address_id=address.id,
        masked_address=mask_address(address.address),
        campaign_id=campaign_id,
        newly_suppressed=added.created,
        stopped=stopped,
        suppression_id=added.suppression_id,
    )


def staff_only_suppressions(session: Session, address_id: int) -> list[str]:
    """Reasons of active suppressions that a recipient cannot lift by re-subscribing."""
    return sorted(
        {s.reason for s in active_suppressions(session, address_id)}
        - {str(r) for r in RECIPIENT_LIFTABLE}
    )


def resubscribe(
    session: Session,
    address_id: int,
    *,
    hit: Hit,
    source: str,
    policy_version: str | None = None,
) -> None:
    """The recipient asks for marketing again: lift only their own unsubscribe, opt back in.

    Raises :class:`CannotResubscribe`, changing nothing, while any suppression that only staff
    may lift (bounce, complaint, postal request, legal, manual) is active.
    """
    blocking = staff_only_suppressions(session, address_id)
    if blocking:
        raise CannotResubscribe(
            "this address cannot be re-subscribed here because it was suppressed for: "
            + ", ".join(r.replace("_", " ") for r in blocking)
            + ". Please contact us to change this."
        )
    lift_suppressions(
        session,
        address_id,
        why="re-subscribed by the recipient",
        actor="recipient",
        reasons=RECIPIENT_LIFTABLE,
        hit=hit,
    )
    record_consent(
        session,
        address_id,
        Scope.MARKETING,
        ConsentStatus.OPTED_IN,
        source=source,
        occurred_at=utcnow(),
        recipient_action=True,
        hit=hit,
        policy_version=policy_version,
    )
