"""Unsubscribe and re-subscribe: what a recipient's own click may change, and nothing more."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import bindparam, exists, select
from sqlalchemy.orm import Session

from suppression.address import mask_address
from suppression.consent import record_consent, repeats_state
from suppression.events import Hit, event_row
from suppression.models import (
    Address,
    ConsentState,
    ConsentStatus,
    Reason,
    Scope,
    Suppression,
    UTCDateTime,
    utcnow,
)
from suppression.sql import built_once, core, inline_constants, run
from suppression.suppressions import (
    RECIPIENT_LIFTABLE,
    active_suppressions,
    add_suppression,
    lift_suppressions,
)
from suppression.tokens import BadToken, LinkPurpose, LinkSubject, TokenOutcome, TokenSigner


class StopQueued(Protocol):
    """Called inside the unsubscribe's transaction with (session, address_id): stops mail to
    that address that is queued but not yet claimed, and returns how many messages it stopped;
    then writes the audit events ``then`` (``event_row`` values, in order), an event whose
    detail has the key ``stopped`` with that number (in the same round trip where it can).
    The dispatcher supplies it; this package knows no delivery table."""

    def __call__(
        self, session: Session, address_id: int, *, then: Sequence[dict[str, Any]] = ()
    ) -> int: ...


# Given whether the unsubscribe suppressed the address anew, the caller's own audit event
# (``record_event``'s arguments, with ``kind``), written in one INSERT after ``unsubscribed``.
AuditAfter = Callable[[bool], dict[str, Any]]


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


@dataclass(frozen=True)
class Held:
    """What :func:`resolve_unsubscribe_link` found: the address already has the active
    marketing ``unsubscribe`` suppression and an opt-out that an opt-out now would repeat,
    and both rows are locked (``FOR SHARE``) until the transaction ends, so nothing can lift
    them before it commits. Good only in that transaction."""

    address_id: int
    suppression_id: int
    transaction: Any


def resolve_unsubscribe_link(
    session: Session, signer: TokenSigner, token: str
) -> tuple[LinkSubject, Address, Held | None]:
    """:func:`resolve_link` for an unsubscribe link, which also tells, in the same statement,
    whether the address is already unsubscribed (a repeated click): then
    :func:`unsubscribe_address` given the :class:`Held` writes only what a repeat still must.
    PostgreSQL in a transaction only; elsewhere the third value is None."""
    connection = core(session)
    if (
        connection.dialect.name != "postgresql"
        or connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
    ):
        subject, address = resolve_link(session, signer, LinkPurpose.UNSUBSCRIBE, token)
        return subject, address, None
    subject = signer.read_link(LinkPurpose.UNSUBSCRIBE, token)
    found = run(
        connection, _address_held(), {"l_address_id": subject.address_id, "l_now": utcnow()}
    )
    if not found:
        raise BadToken(TokenOutcome.UNKNOWN_SUBJECT)
    address_id, text, created_at, suppression_id, repeats_opt_out = found[0]
    address = Address(id=address_id, address=text, created_at=created_at)
    held = None
    if suppression_id is not None and repeats_opt_out:
        held = Held(address_id, suppression_id, session.get_transaction())
    return subject, address, held


def _address_held() -> Any:
    """PostgreSQL: the address, and whether its unsubscribe suppression and its repeated
    opt-out are both there, locking them (``FOR SHARE``: a lift or an opt-in waits for this
    transaction; other clicks do not)."""
    columns = Address.__table__.c
    address_id = bindparam("l_address_id", type_=columns.id.type)
    suppression = (
        select(Suppression.id)
        .where(
            Suppression.address_id == address_id,
            Suppression.scope == str(Scope.MARKETING),
            Suppression.reason == str(Reason.UNSUBSCRIBE),
            Suppression.lifted_at.is_(None),
        )
        .with_for_update(read=True)
        .cte("held_suppression")
    )
    consent = (
        select(ConsentState.status)
        .where(
            ConsentState.address_id == address_id,
            ConsentState.scope == str(Scope.MARKETING),
            repeats_state(ConsentStatus.OPTED_OUT, bindparam("l_now", type_=UTCDateTime())),
        )
        .with_for_update(read=True)
        .cte("held_consent")
    )
    return inline_constants(
        select(
            columns.id,
            columns.address,
            columns.created_at,
            select(suppression.c.id).scalar_subquery().label("suppression_id"),
            exists(select(consent.c.status)).label("repeats_opt_out"),
        ).where(columns.id == address_id)
    )


_address_held = built_once(_address_held)


def _address_by_id() -> Any:
    columns = Address.__table__.c
    return select(columns.id, columns.address, columns.created_at).where(
        columns.id == bindparam("l_address_id")
    )


_address_by_id = built_once(_address_by_id)


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
    held: Held | None = None,
    audit: AuditAfter | None = None,
) -> UnsubscribeResult:
    """The one way an address is unsubscribed from marketing, whoever asks: the recipient's
    link or one-click (the caller verified it with :func:`resolve_link`), the preference
    page, staff acting on a request, inbound mail.

    In the caller's transaction: a marketing ``unsubscribe`` suppression, an opt-out in the
    consent ledger, queued deliveries the gate now refuses stopped, an audit event. Repeating
    it adds no second suppression.

    ``held`` (from :func:`resolve_unsubscribe_link` in this transaction): the suppression and
    the opt-out are there and locked, so only what a repeat still writes is written: queued
    mail stopped (mail queued since the first time) and the events. ``audit``: the caller's
    own event, written with ``unsubscribed`` in one statement.
    """
    if (
        held is not None
        and held.address_id == address.id
        and held.transaction is session.get_transaction()
    ):
        return _repeat(session, address, held, stop_queued, source, hit, campaign_id, actor, audit)
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
    stopped = stop_queued(
        session,
        address.id,
        then=_events(address, hit, actor, campaign_id, source, added.created, audit),
    )
    return UnsubscribeResult(
        address_id=address.id,
        masked_address=mask_address(address.address),
        campaign_id=campaign_id,
        newly_suppressed=added.created,
        stopped=stopped,
        suppression_id=added.suppression_id,
    )


def _repeat(
    session: Session,
    address: Address,
    held: Held,
    stop_queued: StopQueued,
    source: str,
    hit: Hit | None,
    campaign_id: int | None,
    actor: str | None,
    audit: AuditAfter | None,
) -> UnsubscribeResult:
    """An unsubscribe of an address found :class:`Held`: the suppression and the opt-out
    would write nothing, so only the stop and the events remain."""
    stopped = stop_queued(
        session, address.id, then=_events(address, hit, actor, campaign_id, source, False, audit)
    )
    return UnsubscribeResult(
        address_id=address.id,
        masked_address=mask_address(address.address),
        campaign_id=campaign_id,
        newly_suppressed=False,
        stopped=stopped,
        suppression_id=held.suppression_id,
    )


def _events(
    address: Address,
    hit: Hit | None,
    actor: str | None,
    campaign_id: int | None,
    source: str,
    created: bool,
    audit: AuditAfter | None,
) -> list[dict[str, Any]]:
    """The ``unsubscribed`` event (its ``stopped`` filled in by the stop) and the caller's."""
    rows = [
        event_row(
            "unsubscribed",
            address_id=address.id,
            hit=hit,
            actor=actor,
            outcome="suppressed" if created else "already_suppressed",
            campaign_id=campaign_id,
            stopped=None,
            source=source,
        )
    ]
    if audit is not None:
        extra = dict(audit(created))
        rows.append(event_row(extra.pop("kind"), **extra))
    return rows


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
    """The recipient asks for marketing again: lift only their own unsubscribe from
    marketing (one from affiliates, or from one affiliate, stays), opt back in.

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
        scopes=(str(Scope.MARKETING),),
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
