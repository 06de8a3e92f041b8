"""Erasure: delete what we hold about a person, keep them suppressed by a keyed hash only.

One transaction: the contact's personal fields, tags and attributes; the IP and browser of
their page hits and consent rows; staff notes on their suppressions; error texts of their
deliveries (relays quote the address); the raw reports and the recipients and explanations of
the bounces, complaints and mailto unsubscribes that were about them (``inbound_messages``:
those matched to their address or deliveries, and any other that names the address); then
the address itself becomes a keyed hash with a global ``erased`` suppression
(``suppression.erasure``). Delivery and consent rows stay, with
no personal data, so statistics keep their counts. Affiliates that received the person keep
finding them in their suppression feed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session

from dispatcher.campaigns.deliveries import stop_queued
from dispatcher.models import (
    AffiliateRelease,
    AffiliateShare,
    Contact,
    ContactTag,
    Delivery,
    InboundMessage,
    SignupRequest,
)
from dispatcher.privacy.files import forget_export_files
from suppression.address import (
    InvalidAddress,
    address_digest,
    canonical_address,
    delivery_address,
)
from suppression.erasure import erase_address
from suppression.events import record_event
from suppression.models import Address, Consent, Event, Suppression, utcnow
from suppression.tokens import TokenSigner


class ErasureError(ValueError):
    """An erasure request that cannot be carried out as asked."""


@dataclass(frozen=True)
class ErasureReport:
    newly_erased: bool
    was_known: bool
    contacts: int = 0
    stopped: int = 0


def erase_person(
    session: Session, signer: TokenSigner, raw_address: str, *, reason: str, actor: str
) -> ErasureReport:
    """Erase the person behind ``raw_address``. Re-running it changes nothing; an address we
    never held is recorded as a hash all the same, so it can never be added later."""
    if not reason or not reason.strip():
        raise ErasureError("say why the data is erased (--reason), e.g. the request's reference")
    canonical = canonical_address(raw_address)
    held = session.scalar(select(Address.id).where(Address.address == canonical))
    contacts = 0
    mailed = _mailed_addresses(session, held)
    if held is not None:
        contacts = _scrub(session, held, canonical)
    _scrub_inbound(session, held, canonical, mailed)
    # Signups (confirmed or not) hold the address, name, IP and browser as given.
    session.execute(delete(SignupRequest).where(SignupRequest.address == canonical))
    erased = erase_address(session, signer, canonical, actor=actor, source="erasure")
    stopped = stop_queued(session, erased.address_id)
    if erased.newly_erased:
        # The audit keeps who, when and why; never the address.
        record_event(
            session,
            "person_erased",
            address_id=erased.address_id,
            actor=actor,
            outcome="erased" if erased.was_known else "hash_recorded",
            why=reason.strip(),
        )
    return ErasureReport(erased.newly_erased, erased.was_known, contacts, stopped)


def _scrub(session: Session, address_id: int, canonical: str) -> int:
    contact_ids = list(session.scalars(select(Contact.id).where(Contact.address_id == address_id)))
    if contact_ids:
        session.execute(delete(ContactTag).where(ContactTag.contact_id.in_(contact_ids)))
        session.execute(
            update(Contact)
            .where(Contact.id.in_(contact_ids))
            .values(
                submitted_address="",
                first_name=None,
                last_name=None,
                attributes={},
                source="erased",
                updated_at=utcnow(),
            )
        )
    # Our copies of lists that held them go (the download link then answers 410).
    holders = select(AffiliateShare.affiliate_id).where(AffiliateShare.address_id == address_id)
    forget_export_files(
        session,
        AffiliateRelease.affiliate_id.in_(holders),
    )
    session.execute(
        update(AffiliateShare)
        .where(AffiliateShare.address_id == address_id)
        .values(erased_digest=address_digest(canonical))
    )
    session.execute(
        update(Event)
        .where(Event.address_id == address_id)
        .values(ip=None, user_agent=None, fold_key=None)
    )
    session.execute(update(Consent).where(Consent.address_id == address_id).values(ip=None))
    session.execute(
        update(Suppression).where(Suppression.address_id == address_id).values(note=None)
    )
    session.execute(update(Delivery).where(Delivery.address_id == address_id).values(error=None))
    return len(contact_ids)


# What an inbound row keeps once scrubbed: how it was matched and counted, never an address.
_INBOUND_KEPT = ("truncated", "matched_by", "soft_bounces", "token")


def _mailed_addresses(session: Session, address_id: int | None) -> list[str]:
    """The addresses we mailed for ``address_id`` (its contacts' delivery forms)."""
    if address_id is None:
        return []
    given = session.scalars(
        select(Contact.submitted_address).where(Contact.address_id == address_id)
    )
    mailed = []
    for submitted in given:
        try:
            mailed.append(delivery_address(submitted))
        except InvalidAddress:
            continue
    return mailed


def _scrub_inbound(
    session: Session, address_id: int | None, canonical: str, mailed: Iterable[str]
) -> int:
    """Drop the raw report and the recipients and explanation of every inbound row about the
    person; the row's kind, outcome and links stay, so counts and soft-bounce rules hold.

    Rows about them: matched to their address or to one of their deliveries, or naming the
    address (a bounce we could not match still lists it). Retention would drop ``raw`` only
    after ``inbound_keep_days`` and the recipients never. Returns how many rows changed.
    """
    about: list[ColumnElement[bool]] = []
    if address_id is not None:
        theirs = select(Delivery.id).where(Delivery.address_id == address_id)
        about += [InboundMessage.address_id == address_id, InboundMessage.delivery_id.in_(theirs)]
    ids = set(session.scalars(select(InboundMessage.id).where(or_(*about)))) if about else set()
    ids |= _inbound_naming(session, canonical)
    for needle in {_ascii_lower(canonical), *(_ascii_lower(m) for m in mailed)}:
        ids |= set(
            session.scalars(
                select(InboundMessage.id).where(
                    InboundMessage.raw.is_not(None), _raw_contains(session, needle)
                )
            )
        )
    for row in session.scalars(select(InboundMessage).where(InboundMessage.id.in_(ids))):
        kept = {k: row.detail[k] for k in _INBOUND_KEPT if k in row.detail}
        row.detail = {**kept, "why": "erased", "recipients": [], "erased": True}
        row.raw = None
    return len(ids)


def _inbound_naming(session: Session, canonical: str) -> set[int]:
    """Inbound rows whose recipients or explanation name ``canonical`` (any spelling of it)."""
    # SQL narrows by the domain (ASCII in the key; JSON text escapes what is not), since
    # another spelling of the local part can fold to the key (Straße@ to strasse@); each
    # candidate is then checked here.
    domain = "@" + canonical.rpartition("@")[2]
    candidates = session.execute(
        select(InboundMessage.id, InboundMessage.detail)
        .where(func.lower(cast(InboundMessage.detail, Text)).contains(domain, autoescape=True))
        .execution_options(yield_per=1000)
    )
    return {row_id for row_id, detail in candidates if _names(detail, canonical)}


def _names(detail: dict[str, Any], canonical: str) -> bool:
    for recipient in detail.get("recipients") or []:
        try:
            if canonical_address(str(recipient)) == canonical:
                return True
        except InvalidAddress:
            continue
    return canonical in json.dumps(detail, ensure_ascii=False).casefold()


def _ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, as SQLite's ``lower()`` does (others stay as given)."""
    return text.translate({c: c + 32 for c in range(ord("A"), ord("Z") + 1)})


def _raw_contains(session: Session, needle: str) -> ColumnElement[bool]:
    """SQL: the raw bytes hold ``needle`` (already ASCII-lower-cased), ASCII case aside."""
    data = needle.encode("utf-8")
    if session.get_bind().dialect.name == "postgresql":
        # encode(…, 'escape') writes bytes >= 0x80 and NUL as \ooo and doubles backslashes.
        escaped = "".join(
            "\\\\" if b == 0x5C else f"\\{b:03o}" if b >= 0x80 or b == 0 else chr(b) for b in data
        )
        return func.strpos(func.lower(func.encode(InboundMessage.raw, "escape")), escaped) > 0
    return func.instr(func.lower(cast(InboundMessage.raw, Text)), needle) > 0
