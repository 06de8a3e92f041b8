"""Small row builders for tests: each makes exactly what a test names, nothing shared."""

from __future__ import annotations

from datetime import UTC, datetime

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
            record_consent(
                session, address_id, scope, status, source="test", occurred_at=T0
            )
    if suppressed is not None:
        add_suppression(
            session, address_id, scope=suppression_scope, reason=suppressed, source="test"
        )
    session.flush()
    return contact
