"""Access: everything held about one person, as one JSON-ready document."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, or_, select
from sqlalchemy.orm import Session

from dispatcher.models import (
    Affiliate,
    AffiliateRelease,
    AffiliateShare,
    Campaign,
    Contact,
    ContactTag,
    Delivery,
)
from suppression.address import canonical_address
from suppression.events import record_event
from suppression.models import Address, Base, Consent, ConsentState, Event, Suppression

# Tables the sections below already cover; any other table that points at the person (by
# address or contact) is listed generically, so a table added later is never left out.
_COVERED = {
    "addresses",
    "contacts",
    "contact_tags",
    "consents",
    "consent_states",
    "suppressions",
    "deliveries",
    "events",
    "affiliate_shares",
}


class PersonNotFound(LookupError):
    """No address of that form is held (it may never have been given, or was erased)."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _row(obj: Any, *names: str) -> dict[str, Any]:
    return {n: _plain(getattr(obj, n)) for n in names}


def person_record(session: Session, raw_address: str, *, actor: str) -> dict[str, Any]:
    """The person's data, audited as an access request. Raises ``InvalidAddress`` or
    :class:`PersonNotFound`."""
    canonical = canonical_address(raw_address)
    address = session.scalar(select(Address).where(Address.address == canonical))
    if address is None:
        raise PersonNotFound(f"no data is held for {raw_address.strip()!r}")
    aid = address.id
    contact = session.scalar(select(Contact).where(Contact.address_id == aid))
    doc: dict[str, Any] = {
        "address": address.address,
        "address_recorded_at": _plain(address.created_at),
        "contact": None,
    }
    contact_ids: list[int] = []
    if contact is not None:
        contact_ids.append(contact.id)
        doc["contact"] = {
            **_row(
                contact,
                "submitted_address",
                "first_name",
                "last_name",
                "attributes",
                "source",
                "collected_at",
                "created_at",
                "updated_at",
            ),
            "tags": sorted(
                session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact.id))
            ),
        }
    doc["consent_ledger"] = [
        _row(c, "scope", "status", "source", "occurred_at", "recorded_at", "actor", "ip")
        | {"policy_version": c.policy_version}
        for c in session.scalars(
            select(Consent).where(Consent.address_id == aid).order_by(Consent.id)
        )
    ]
    doc["consent_now"] = {
        s.scope: {"status": s.status, "since": _plain(s.occurred_at)}
        for s in session.scalars(select(ConsentState).where(ConsentState.address_id == aid))
    }
    doc["suppressions"] = [
        _row(
            s,
            "scope",
            "reason",
            "source",
            "note",
            "created_at",
            "created_by",
            "lifted_at",
            "lifted_by",
            "lift_reason",
        )
        for s in session.scalars(
            select(Suppression).where(Suppression.address_id == aid).order_by(Suppression.id)
        )
    ]
    deliveries = session.execute(
        select(Delivery, Campaign.name, Campaign.subject, Campaign.purpose)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.address_id == aid)
        .order_by(Delivery.id)
    )
    doc["deliveries"] = [
        {"campaign_id": d.campaign_id, "campaign": name, "subject": subject, "purpose": purpose}
        | _row(d, "status", "skip_reason", "error", "created_at", "finished_at")
        for d, name, subject, purpose in deliveries
    ]
    doc["events"] = [
        _row(
            e,
            "kind",
            "occurred_at",
            "last_at",
            "count",
            "ip",
            "user_agent",
            "outcome",
            "actor",
            "detail",
        )
        for e in session.scalars(select(Event).where(Event.address_id == aid).order_by(Event.id))
    ]
    shares = session.execute(
        select(Affiliate.name, Affiliate.fields, AffiliateRelease.id, AffiliateRelease.created_at)
        .select_from(AffiliateShare)
        .join(Affiliate, Affiliate.id == AffiliateShare.affiliate_id)
        .join(AffiliateRelease, AffiliateRelease.id == AffiliateShare.release_id)
        .where(AffiliateShare.address_id == aid)
        .order_by(AffiliateRelease.id)
    )
    doc["shared_with_affiliates"] = [
        {"affiliate": name, "fields": list(fields), "release_id": rid, "released_at": _plain(at)}
        for name, fields, rid, at in shares
    ]
    doc["other_records"] = _other_rows(session, aid, contact_ids)
    record_event(session, "person_exported", address_id=aid, actor=actor, outcome="exported")
    return doc


def _other_rows(session: Session, address_id: int, contact_ids: list[int]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for table in Base.metadata.sorted_tables:
        if table.name in _COVERED:
            continue
        where = _mentions(table, address_id, contact_ids)
        if where is None:
            continue
        rows = session.execute(select(table).where(where)).mappings()
        listed = [{k: _plain(v) for k, v in row.items()} for row in rows]
        if listed:
            found[table.name] = listed
    return found


def _mentions(table: Table, address_id: int, contact_ids: list[int]) -> Any:
    clauses = []
    if "address_id" in table.c:
        clauses.append(table.c.address_id == address_id)
    if "contact_id" in table.c and contact_ids:
        clauses.append(table.c.contact_id.in_(contact_ids))
    if not clauses:
        return None
    return or_(*clauses)
