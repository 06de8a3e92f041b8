"""Erasure: delete what we hold about a person, keep them suppressed by a keyed hash only.

One transaction: the contact's personal fields, tags and attributes; the IP and browser of
their page hits and consent rows; staff notes on their suppressions; error texts of their
deliveries (relays quote the address); then the address itself becomes a keyed hash with a
global ``erased`` suppression (``suppression.erasure``). Delivery and consent rows stay, with
no personal data, so statistics keep their counts. Affiliates that received the person keep
finding them in their suppression feed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dispatcher.campaigns.deliveries import stop_queued
from dispatcher.models import (
    AffiliateRelease,
    AffiliateShare,
    Contact,
    ContactTag,
    Delivery,
    SignupRequest,
)
from dispatcher.privacy.files import forget_export_files
from suppression.address import address_digest, canonical_address
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
    if held is not None:
        contacts = _scrub(session, held, canonical)
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
