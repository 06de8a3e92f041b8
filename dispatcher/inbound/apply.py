"""Applying what came back: the policy for each kind of report, each message recorded once.

- hard bounce → global ``hard_bounce`` suppression, the delivery marked bounced;
- soft bounce → counted; ``soft_bounce_limit`` within ``soft_bounce_days`` → global
  ``repeated_soft_bounce`` suppression (staff may lift it once the mailbox works again);
- complaint → global ``complaint`` suppression;
- mailto unsubscribe with a valid token → :func:`suppression.unsubscribe.unsubscribe_address`
  (the same act as the web's); without one, from an address we know → the same act on
  marketing, recorded ``unverified``;
- a provider's signed unsubscribe event (SendGrid ``unsubscribe``/``group_unsubscribe``) →
  the same function, with the provider and event as its source;
- auto-replies and anything else → recorded, nothing changed.

A bounce or complaint must name one of our deliveries with a valid tag (VERP return path or
Message-ID): otherwise it changes nothing and is recorded ``unmatched``, so a forged report
cannot suppress anyone. Everything happens in the caller's transaction, after the message's
row is inserted under its unique key: a replay, or a second process racing on the same
message, applies nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.campaigns.deliveries import stop_queued
from dispatcher.inbound import returnpath
from dispatcher.inbound.classify import Kind, Report, classify
from dispatcher.inbound.rates import pause_if_over
from dispatcher.inbound.storable import dedup_key, storable_text
from dispatcher.models import Contact, Delivery, InboundMessage
from dispatcher.settings import Settings
from suppression.address import canonical_address
from suppression.events import Hit, record_event
from suppression.models import GLOBAL_SCOPE, Address, Reason, utcnow
from suppression.sql import insert_for
from suppression.suppressions import add_suppression
from suppression.tokens import BadToken, LinkPurpose, TokenSigner
from suppression.unsubscribe import resolve_link, unsubscribe_address

log = logging.getLogger(__name__)

# Feedback on a delivery only gets worse: a complaint outranks a hard bounce, which
# outranks a soft one.
_RANK = {None: 0, "soft_bounce": 1, "hard_bounce": 2, "complaint": 3}


class Outcome:
    APPLIED = "applied"
    UNMATCHED = "unmatched"
    UNVERIFIED = "unverified"
    IGNORED = "ignored"
    UNPARSED = "unparsed"
    REJECTED = "rejected"


@dataclass
class Processed:
    """What processing one message did (``duplicate``: seen before, nothing changed)."""

    key: str
    report: Report
    outcome: str = Outcome.IGNORED
    duplicate: bool = False
    delivery_id: int | None = None
    campaign_id: int | None = None
    address_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.report.as_json(),
            "outcome": "duplicate" if self.duplicate else self.outcome,
            "delivery_id": self.delivery_id,
            "campaign_id": self.campaign_id,
        }


def message_key(report: Report, raw: bytes) -> str:
    """The message's Message-ID (hashed when it is not plain ASCII or too long for the
    column, see :func:`storable.dedup_key`), or a hash of its bytes when it has none."""
    if report.message_id:
        return dedup_key("mid", report.message_id.strip())
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def process_message(
    session: Session,
    settings: Settings,
    signer: TokenSigner,
    raw: bytes,
    *,
    source: str,
    envelope: tuple[str, ...] = (),
) -> Processed:
    """Record ``raw`` once and apply what it says (in the caller's transaction)."""
    report = classify(raw, unsubscribe_local=_local(settings.unsubscribe_mailto))
    return apply_report(
        session,
        settings,
        signer,
        report,
        key=message_key(report, raw),
        raw=raw,
        source=source,
        envelope=envelope,
    )


def apply_report(
    session: Session,
    settings: Settings,
    signer: TokenSigner,
    report: Report,
    *,
    key: str,
    raw: bytes,
    source: str,
    envelope: tuple[str, ...] = (),
) -> Processed:
    """Record a classified message or provider event under ``key`` (once) and apply it.

    ``raw`` is kept (bounded) and searched for our VERP address and Message-ID tags.
    """
    done = Processed(key=key, report=report)
    row_id = _record(session, settings, raw, done, source)
    if row_id is None:
        done.duplicate = True
        return done
    _apply(session, settings, signer, raw, envelope, done, source)
    row = session.get(InboundMessage, row_id)
    assert row is not None
    row.outcome = done.outcome
    row.delivery_id = done.delivery_id
    row.campaign_id = done.campaign_id
    row.address_id = done.address_id
    row.detail = {**row.detail, **done.detail}
    if done.campaign_id is not None and report.kind in (Kind.HARD_BOUNCE, Kind.COMPLAINT):
        session.flush()
        pause_if_over(session, settings, done.campaign_id)
    return done


def _local(mailbox: str) -> str:
    return mailbox.rpartition("@")[0].lower() or "unsubscribe"


def _record(
    session: Session, settings: Settings, raw: bytes, done: Processed, source: str
) -> int | None:
    report = done.report
    stmt = (
        insert_for(session, InboundMessage)
        .values(
            key=done.key,
            source=source,
            received_at=utcnow(),
            kind=str(report.kind),
            outcome=Outcome.UNPARSED if report.kind is Kind.UNPARSED else Outcome.IGNORED,
            detail={
                "why": storable_text(report.why),
                "recipients": [storable_text(r) for r in report.recipients[:20]],
                "truncated": report.truncated,
            },
            raw=raw[: settings.inbound_keep_bytes],
            raw_size=len(raw),
        )
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(InboundMessage.id)
    )
    result: int | None = session.execute(stmt).scalar_one_or_none()
    return result


def _apply(
    session: Session,
    settings: Settings,
    signer: TokenSigner,
    raw: bytes,
    envelope: tuple[str, ...],
    done: Processed,
    source: str,
) -> None:
    kind = done.report.kind
    if kind is Kind.UNPARSED:
        done.outcome = Outcome.UNPARSED
        return
    if kind in (Kind.AUTO_REPLY, Kind.NOT_FEEDBACK):
        done.outcome = Outcome.IGNORED
        return
    if kind is Kind.UNSUBSCRIBE and done.report.extra.get("provider"):
        _provider_unsubscribe(session, settings, signer, raw, envelope, done, source)
        return
    if kind is Kind.UNSUBSCRIBE:
        _unsubscribe(session, signer, done, source)
        return
    delivery = _matched_delivery(session, settings, signer, raw, envelope, done)
    if delivery is None:
        done.outcome = Outcome.UNMATCHED
        return
    done.delivery_id, done.campaign_id = delivery.id, delivery.campaign_id
    done.address_id = delivery.address_id
    done.outcome = Outcome.APPLIED
    if _RANK[str(kind)] > _RANK.get(delivery.feedback, 0):
        delivery.feedback = str(kind)
        delivery.feedback_at = utcnow()
    origin = f"inbound:{source}"
    note = storable_text(f"campaign {delivery.campaign_id}: {done.report.why}"[:500])
    if kind is Kind.HARD_BOUNCE:
        _suppress(session, delivery.address_id, Reason.HARD_BOUNCE, origin, note)
    elif kind is Kind.COMPLAINT:
        _suppress(session, delivery.address_id, Reason.COMPLAINT, origin, note)
    elif kind is Kind.SOFT_BOUNCE:
        _count_soft(session, settings, delivery.address_id, origin, done)


def _matched_delivery(
    session: Session,
    settings: Settings,
    signer: TokenSigner,
    raw: bytes,
    envelope: tuple[str, ...],
    done: Processed,
) -> Delivery | None:
    found = returnpath.traces(
        signer, settings.return_path or "bounces@invalid", raw[: 2 * 1024 * 1024], envelope
    )
    for trace in found:
        if trace.delivery_id is not None:
            delivery = session.get(Delivery, trace.delivery_id)
        else:
            delivery = session.scalar(
                select(Delivery).where(
                    Delivery.campaign_id == trace.campaign_id,
                    Delivery.contact_id == trace.contact_id,
                )
            )
        if delivery is not None:
            done.detail["matched_by"] = trace.via
            return delivery
    return None


def _suppress(session: Session, address_id: int, reason: Reason, origin: str, note: str) -> None:
    add_suppression(
        session, address_id, scope=GLOBAL_SCOPE, reason=reason, source=origin, note=note
    )
    stop_queued(session, address_id)


def _count_soft(
    session: Session, settings: Settings, address_id: int, origin: str, done: Processed
) -> None:
    since = utcnow() - timedelta(days=settings.soft_bounce_days)
    earlier = session.scalar(
        select(func.count())
        .select_from(InboundMessage)
        .where(
            InboundMessage.address_id == address_id,
            InboundMessage.kind == str(Kind.SOFT_BOUNCE),
            InboundMessage.outcome == Outcome.APPLIED,
            InboundMessage.received_at >= since,
        )
    )
    count = int(earlier or 0) + 1  # this message's row is not updated yet
    done.detail["soft_bounces"] = count
    if count >= settings.soft_bounce_limit:
        note = f"{count} soft bounces within {settings.soft_bounce_days} days"
        _suppress(session, address_id, Reason.REPEATED_SOFT_BOUNCE, f"{origin}:soft_bounces", note)


def _unsubscribe(session: Session, signer: TokenSigner, done: Processed, source: str) -> None:
    hit = Hit(source=f"mailto:{source}")
    token = returnpath.unsubscribe_token(done.report.subject)
    if token is not None:
        try:
            subject, address = resolve_link(session, signer, LinkPurpose.UNSUBSCRIBE, token)
            result = unsubscribe_address(
                session,
                address,
                stop_queued=stop_queued,
                hit=hit,
                source="mailto",
                campaign_id=subject.campaign_id,
            )
        except BadToken as exc:
            done.detail["token"] = str(exc.outcome)
        else:
            done.outcome = Outcome.APPLIED
            done.address_id, done.campaign_id = result.address_id, result.campaign_id
            return
    known = _known_address(session, done.report.sender)
    if known is None:
        done.outcome = Outcome.UNMATCHED
        return
    # No valid token: the From address can be forged, so this does no more than the
    # recipient's own opt-out from marketing would, and says it was not verified.
    unsubscribe_address(
        session, known, stop_queued=stop_queued, hit=hit, source="mailto_unverified"
    )
    done.outcome = Outcome.UNVERIFIED
    done.address_id = known.id


def _provider_unsubscribe(
    session: Session,
    settings: Settings,
    signer: TokenSigner,
    raw: bytes,
    envelope: tuple[str, ...],
    done: Processed,
    source: str,
) -> None:
    """A provider's signed event saying the person used the provider's own unsubscribe link.

    The event's signature was verified at the door, so the provider vouches for the address;
    it is applied to the delivery its tag names (our Message-ID echoed back) or, when the
    event carries none, to the address it names if that is a contact of ours.
    """
    event = str(done.report.extra.get("event", "unsubscribe"))
    origin = f"{source}:{event}"
    hit = Hit(source=origin)
    delivery = _matched_delivery(session, settings, signer, raw, envelope, done)
    if delivery is not None:
        address = session.get(Address, delivery.address_id)
        campaign_id: int | None = delivery.campaign_id
        done.delivery_id = delivery.id
    else:
        recipients = done.report.recipients
        address = _known_address(session, recipients[0] if recipients else None)
        campaign_id = None
        if address is not None:
            done.detail["matched_by"] = "event email"
    if address is None:
        done.outcome = Outcome.UNMATCHED
        return
    result = unsubscribe_address(
        session, address, stop_queued=stop_queued, hit=hit, source=origin, campaign_id=campaign_id
    )
    done.outcome = Outcome.APPLIED
    done.address_id, done.campaign_id = result.address_id, result.campaign_id


def _known_address(session: Session, sender: str | None) -> Address | None:
    if not sender:
        return None
    try:
        canonical = canonical_address(sender)
    except ValueError:
        return None
    return session.scalar(
        select(Address)
        .join(Contact, Contact.address_id == Address.id)
        .where(Address.address == canonical)
    )


def record_rejected(
    session: Session, *, key: str, source: str, why: str, raw: bytes, keep: int
) -> bool:
    """Record an event refused at the door (forged, unsigned); False when seen before."""
    stmt = (
        insert_for(session, InboundMessage)
        .values(
            key=key[:300],
            source=source,
            received_at=utcnow(),
            kind=str(Kind.NOT_FEEDBACK),
            outcome=Outcome.REJECTED,
            detail={"why": why},
            raw=raw[:keep],
            raw_size=len(raw),
        )
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(InboundMessage.id)
    )
    created = session.execute(stmt).scalar_one_or_none() is not None
    if created:
        record_event(session, "inbound_rejected", outcome="rejected", source=source, why=why)
    return created


def record_failed(
    session: Session, settings: Settings, raw: bytes, *, source: str, why: str
) -> None:
    """Record a message whose processing failed (not for the database being away) as
    ``unparsed``, keyed by its bytes: the mailbox reader moves it on, and this row, with the
    message kept, is what staff find of it. Its own key (``failed:``) leaves the message's
    Message-ID free, so a replay once the cause is fixed applies it."""
    stmt = (
        insert_for(session, InboundMessage)
        .values(
            key="failed:" + hashlib.sha256(raw).hexdigest(),
            source=source,
            received_at=utcnow(),
            kind=str(Kind.UNPARSED),
            outcome=Outcome.UNPARSED,
            detail={"why": storable_text(why)},
            raw=raw[: settings.inbound_keep_bytes],
            raw_size=len(raw),
        )
        .on_conflict_do_nothing(index_elements=["key"])
    )
    session.execute(stmt)
