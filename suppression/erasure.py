"""Erased addresses: a person's address replaced by a keyed hash that stays suppressed.

After an erasure the ``addresses`` row holds ``erased:<HMAC of the canonical address>`` instead
of the address, with a global ``erased`` suppression nobody can lift. The same address given
again (an import, a signup) is recognised by recomputing the hash, and refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppression.models import GLOBAL_SCOPE, Address, Reason
from suppression.sql import insert_for
from suppression.suppressions import add_suppression
from suppression.tokens import TokenSigner

ERASED_PREFIX = "erased:"


def erased_forms(signer: TokenSigner, canonical: str) -> list[str]:
    """What the address row of ``canonical`` holds once erased, under each key (newest first)."""
    return [ERASED_PREFIX + digest for digest in signer.keyed_digests(canonical)]


def is_erased_form(stored: str) -> bool:
    return stored.startswith(ERASED_PREFIX)


def erased_among(session: Session, signer: TokenSigner, canonicals: Iterable[str]) -> set[str]:
    """The canonical addresses of ``canonicals`` that were erased: they must not come back."""
    forms: dict[str, str] = {}
    for canonical in set(canonicals):
        for form in erased_forms(signer, canonical):
            forms[form] = canonical
    if not forms:
        return set()
    found = session.scalars(select(Address.address).where(Address.address.in_(list(forms))))
    return {forms[f] for f in found}


def erased_address_id(session: Session, signer: TokenSigner, canonical: str) -> int | None:
    """The id of the row that holds ``canonical`` as an erased hash, or None."""
    return session.scalar(
        select(Address.id).where(Address.address.in_(erased_forms(signer, canonical))).limit(1)
    )


def any_erased(session: Session) -> bool:
    """Whether any address was ever erased (then imports must check against the hashes)."""
    return (
        session.scalar(select(Address.id).where(Address.address.startswith(ERASED_PREFIX)).limit(1))
        is not None
    )


@dataclass(frozen=True)
class ErasedAddress:
    address_id: int
    # False when the address had been erased already (re-running is a no-op).
    newly_erased: bool
    # False when we never held the address: only the hash is recorded.
    was_known: bool


def erase_address(
    session: Session, signer: TokenSigner, canonical: str, *, actor: str, source: str
) -> ErasedAddress:
    """Replace ``canonical`` by its keyed hash and suppress it globally, for good.

    The caller deletes what else the product holds about the person in the same transaction.
    """
    forms = erased_forms(signer, canonical)
    row = session.scalar(
        select(Address).where(Address.address.in_([canonical, *forms])).with_for_update()
    )
    if row is not None and is_erased_form(row.address):
        return ErasedAddress(row.id, newly_erased=False, was_known=True)
    was_known = row is not None
    if row is None:
        session.execute(
            insert_for(session, Address).values(address=forms[0]).on_conflict_do_nothing()
        )
        address_id = session.scalar(select(Address.id).where(Address.address == forms[0]))
        assert address_id is not None
    else:
        row.address = forms[0]
        address_id = row.id
    add_suppression(
        session,
        address_id,
        scope=GLOBAL_SCOPE,
        reason=Reason.ERASED,
        source=source,
        actor=actor,
    )
    return ErasedAddress(address_id, newly_erased=True, was_known=was_known)
