"""Canonical addresses as rows: the one table that consent and suppressions point at."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppression.address import canonical_address
from suppression.models import Address
from suppression.sql import insert_for


def ensure_address(session: Session, raw: str) -> int:
    """Id of the row for ``raw``'s canonical form, created if new. Raises ``InvalidAddress``."""
    canonical = canonical_address(raw)
    stmt = insert_for(session, Address).values(address=canonical).on_conflict_do_nothing()
    session.execute(stmt)
    found = session.scalar(select(Address.id).where(Address.address == canonical))
    assert found is not None
    return found


def find_address(session: Session, raw: str) -> Address | None:
    """The row for ``raw``'s canonical form, or None. Raises ``InvalidAddress``."""
    canonical = canonical_address(raw)
    return session.scalar(select(Address).where(Address.address == canonical))


def ensure_addresses(session: Session, canonical: list[str]) -> dict[str, int]:
    """Ids for already canonical addresses, creating the missing rows: two statements."""
    unique = sorted(set(canonical))
    if not unique:
        return {}
    session.execute(
        insert_for(session, Address)
        .values([{"address": a} for a in unique])
        .on_conflict_do_nothing()
    )
    rows = session.execute(select(Address.address, Address.id).where(Address.address.in_(unique)))
    return {address: address_id for address, address_id in rows}
