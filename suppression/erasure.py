"""Erased addresses: a person's address replaced by a keyed hash that stays suppressed.

After an erasure the ``addresses`` row holds ``erased:<HMAC of the canonical address>`` instead
of the address, with a global ``erased`` suppression nobody can lift. The same address given
again (an import, a signup) is recognised by recomputing the hash, and refused.

The HMAC's key is the erasure secret (``erasure_secret``), not a signing key: signing keys are
retired after a year, an erasure is for ever. Each signing key in the list wraps the secret;
a key added to the list wraps it too as soon as a process holding it and an older key needs
the secret, so retiring the older key later loses nothing. Hashes made before the secret
existed (under the signing keys themselves) are still recognised while their key is listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppression.models import GLOBAL_SCOPE, Address, ErasureSecret, Reason, utcnow
from suppression.sql import insert_for
from suppression.suppressions import add_suppression
from suppression.tokens import TokenSigner

ERASED_PREFIX = "erased:"


class ErasureSecretLost(RuntimeError):
    """No signing key in the list opens the erasure secret: erased addresses could not be
    recognised, so nothing that might add one back may go on."""


def erasure_secret(session: Session, signer: TokenSigner) -> bytes:
    """The key of the erased-address hashes, wrapped anew under any listed key that lacks a
    wrap. Written by the first caller (from its newest key, see ``TokenSigner.erasure_seed``);
    raises :class:`ErasureSecretLost` when none of the signer's keys opens it."""
    wraps = session.scalar(select(ErasureSecret.wraps).where(ErasureSecret.id == 1))
    if wraps is None:
        seed = signer.wrap_secret(signer.erasure_seed())
        session.execute(
            insert_for(session, ErasureSecret)
            .values(id=1, wraps=seed, created_at=utcnow())
            .on_conflict_do_nothing()
        )
        wraps = session.scalar(select(ErasureSecret.wraps).where(ErasureSecret.id == 1))
        assert wraps is not None
    secret = signer.unwrap_secret(wraps)
    if secret is None:
        raise ErasureSecretLost(
            "none of DISPATCHER_SECRET_KEYS opens the erasure secret, so erased addresses "
            "cannot be recognised: list again the key retired last, with the new one first"
        )
    fresh = signer.wrap_secret(secret)
    if set(fresh) - set(wraps):
        row = session.scalar(select(ErasureSecret).where(ErasureSecret.id == 1).with_for_update())
        assert row is not None
        row.wraps = {**fresh, **row.wraps}
    return secret


def erased_forms(session: Session, signer: TokenSigner, canonical: str) -> list[str]:
    """What the address row of ``canonical`` holds once erased: under the erasure secret
    (first, what an erasure writes now), then under each listed key (older erasures)."""
    return _forms(signer, erasure_secret(session, signer), canonical)


def _forms(signer: TokenSigner, secret: bytes, canonical: str) -> list[str]:
    digests = [signer.secret_digest(secret, canonical), *signer.keyed_digests(canonical)]
    return [ERASED_PREFIX + digest for digest in dict.fromkeys(digests)]


def is_erased_form(stored: str) -> bool:
    return stored.startswith(ERASED_PREFIX)


def erased_among(session: Session, signer: TokenSigner, canonicals: Iterable[str]) -> set[str]:
    """The canonical addresses of ``canonicals`` that were erased: they must not come back."""
    forms: dict[str, str] = {}
    unique = set(canonicals)
    secret = erasure_secret(session, signer) if unique else b""
    for canonical in unique:
        for form in _forms(signer, secret, canonical):
            forms[form] = canonical
    if not forms:
        return set()
    found = session.scalars(select(Address.address).where(Address.address.in_(list(forms))))
    return {forms[f] for f in found}


def erased_address_id(session: Session, signer: TokenSigner, canonical: str) -> int | None:
    """The id of the row that holds ``canonical`` as an erased hash, or None."""
    return session.scalar(
        select(Address.id)
        .where(Address.address.in_(erased_forms(session, signer, canonical)))
        .limit(1)
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
    forms = erased_forms(session, signer, canonical)
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
