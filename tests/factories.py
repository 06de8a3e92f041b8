"""Small row builders for tests: each makes exactly what a test names, nothing shared."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from dispatcher.models import Contact
from suppression.consent import record_consent
from suppression.models import ConsentStatus, Reason, Scope
from suppression.registry import ensure_address
from suppression.suppressions import add_suppression

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def make_contact(
    session: Session,
    address: str,
    *,
    marketing: ConsentStatus | None = ConsentStatus.OPTED_IN,
    affiliates: ConsentStatus | None = None,
    first_name: str | None = "Ann",
    last_name: str | None = "Example",
    suppressed: Reason | None = None,
    suppression_scope: str = "marketing",
    attributes: dict[str, str] | None = None,
) -> Contact:
    address_id = ensure_address(session, address)
    contact = Contact(
        address_id=address_id,
        submitted_address=address,
        first_name=first_name,
        last_name=last_name,
        attributes=attributes or {},
        source="test",
        collected_at=T0,
    )
    session.add(contact)
    for scope, status in ((Scope.MARKETING, marketing), (Scope.AFFILIATES, affiliates)):
        if status is not None:
            record_consent(session, address_id, scope, status, source="test", occurred_at=T0)
    if suppressed is not None:
        add_suppression(
            session, address_id, scope=suppression_scope, reason=suppressed, source="test"
        )
    session.flush()
    return contact


def bulk_contacts(
    session: Session,
    count: int,
    *,
    domain: str = "example.com",
    prefix: str = "r",
    not_opted_in_every: int = 0,
    suppressed_every: int = 0,
) -> set[str]:
    """``count`` contacts for fault and load tests; every ``not_opted_in_every``-th has no
    consent and every ``suppressed_every``-th a global complaint suppression. Returns the
    addresses that are eligible for marketing.

    Addresses and contacts go in set-wise (thousands in a moment); consent and suppressions
    go through the functions production uses (``record_consent``, ``add_suppression``), so
    the gate is tested against rows as production writes them.
    """
    from sqlalchemy import insert, select

    from suppression.models import Address

    addresses = [f"{prefix}{i:06d}@{domain}" for i in range(count)]
    session.execute(insert(Address), [{"address": a, "created_at": T0} for a in addresses])
    ids = dict(
        session.execute(
            select(Address.address, Address.id).where(Address.address.in_(addresses))
        ).all()
    )
    session.execute(
        insert(Contact),
        [
            {
                "address_id": ids[a],
                "submitted_address": a,
                "first_name": f"N{i}",
                "last_name": "Bulk",
                "attributes": {},
                "source": "bulk",
                "collected_at": T0,
                "created_at": T0,
                "updated_at": T0,
            }
            for i, a in enumerate(addresses)
        ],
    )
    eligible: set[str] = set()
    for i, a in enumerate(addresses):
        if not_opted_in_every and i % not_opted_in_every == 1:
            continue
        record_consent(
            session, ids[a], Scope.MARKETING, ConsentStatus.OPTED_IN, source="bulk", occurred_at=T0
        )
        if suppressed_every and i % suppressed_every == 2:
            add_suppression(session, ids[a], scope="global", reason=Reason.COMPLAINT, source="bulk")
            continue
        eligible.add(a)
    return eligible


def make_campaign(session: Session, status: str = "sending", **fields: Any) -> Any:
    """A campaign (flushed, so it has its id) with no delivery rows; ``fields`` override
    the plain defaults (``name``, ``purpose``, ``fanning_out`` …)."""
    from dispatcher.models import Campaign

    values: dict[str, Any] = {
        "name": "c",
        "subject": "s",
        "template": "new-releases",
        "purpose": "marketing",
        "status": status,
        **fields,
    }
    campaign = Campaign(**values)
    session.add(campaign)
    session.flush()
    return campaign


def make_sending_campaign(session: Session, purpose: str = "marketing") -> tuple[int, list[int]]:
    """A ``sending`` campaign fanned out to every contact made so far: its id and its
    delivery ids in order (one queued row per contact)."""
    from sqlalchemy import select

    from dispatcher.campaigns.fanout import create_deliveries
    from dispatcher.models import Delivery

    campaign = make_campaign(session, purpose=purpose)
    create_deliveries(session, campaign)
    ids = session.scalars(
        select(Delivery.id).where(Delivery.campaign_id == campaign.id).order_by(Delivery.id)
    )
    return campaign.id, list(ids)
