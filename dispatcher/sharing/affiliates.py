"""Affiliates as records: who they are, which fields they may receive, their credential.

Exports and suppression feeds live in :mod:`dispatcher.sharing.export`. Who may be shared
is decided only by :func:`suppression.gate.affiliate_shareable`; which fields leave is the
affiliate's whitelist, drawn from a fixed allow-list (never ids).
"""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from dispatcher.models import Affiliate
from suppression.address import InvalidAddress, canonical_address
from suppression.events import record_event
from suppression.models import utcnow

# Columns of a contact an affiliate may receive; any other field names an attribute key.
CONTACT_FIELDS = ("email", "first_name", "last_name")
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
# An id in any spelling ("id", "contact_id", "customerId", "crm-id") is never shared.
_ID_LIKE = re.compile(r"(?i:(^|[_\-])id$|^id[_\-])|[a-z](Id|ID)$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{1,63}$")
# A credential is "<name>.<secret>": the name says whose it is (a bearer header needs no
# user name), the secret is what is checked. Names never contain a dot.
_SEPARATOR = "."


class AffiliateError(ValueError):
    """A request about affiliates that cannot be carried out; the message says why."""


class NotAuthenticated(AffiliateError):
    """A credential that does not open this affiliate; ``outcome`` is what the audit records."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def valid_fields(text: str) -> list[str]:
    """The whitelist ``text`` names (comma-separated), or :class:`AffiliateError` saying why not."""
    fields = [f.strip() for f in text.split(",") if f.strip()]
    if not fields:
        raise AffiliateError("--fields names no field (e.g. email,first_name,genre)")
    for field in fields:
        if _ID_LIKE.search(field) or field.lower() in ("id", "uuid", "address_id"):
            raise AffiliateError(f"field {field!r} looks like an id: ids are never shared")
        if field not in CONTACT_FIELDS and not _ATTRIBUTE.match(field):
            raise AffiliateError(
                f"field {field!r} cannot be shared: use {', '.join(CONTACT_FIELDS)}"
                " or an attribute name imported with the contacts"
            )
    if len(set(fields)) != len(fields):
        raise AffiliateError("--fields names a field twice")
    return fields


def get_affiliate(session: Session, name: str) -> Affiliate:
    affiliate = session.scalar(select(Affiliate).where(Affiliate.name == name))
    if affiliate is None:
        raise AffiliateError(f"no affiliate named {name!r}")
    return affiliate


def add_affiliate(
    session: Session, name: str, *, contact: str, fields: str, actor: str | None
) -> tuple[Affiliate, str]:
    """A new affiliate and its credential (shown once; only its hash is kept)."""
    if not _NAME.match(name):
        raise AffiliateError(
            f"affiliate name {name!r}: use 2-64 lower-case letters, digits, '-' or '_'"
        )
    if session.scalar(select(Affiliate.id).where(Affiliate.name == name)) is not None:
        raise AffiliateError(f"an affiliate named {name!r} exists already")
    try:
        contact_email = canonical_address(contact)
    except InvalidAddress as exc:
        raise AffiliateError(f"--contact {contact!r}: {exc}") from None
    whitelist = valid_fields(fields)
    credential = f"{name}{_SEPARATOR}{secrets.token_urlsafe(32)}"
    affiliate = Affiliate(
        name=name,
        contact_email=contact_email,
        fields=whitelist,
        credential_hash=generate_password_hash(credential),
        created_by=actor,
        created_at=utcnow(),
    )
    session.add(affiliate)
    session.flush()
    record_event(
        session, "affiliate_added", actor=actor, affiliate_id=affiliate.id, fields=whitelist
    )
    return affiliate, credential


def disable_affiliate(session: Session, name: str, *, actor: str | None) -> None:
    """No more exports, downloads or feeds for ``name``; its records and audit stay."""
    affiliate = get_affiliate(session, name)
    if affiliate.disabled_at is not None:
        raise AffiliateError(f"affiliate {name!r} is already disabled")
    affiliate.disabled_at = utcnow()
    record_event(session, "affiliate_disabled", actor=actor, affiliate_id=affiliate.id)


def authenticate(session: Session, name: str, credential: str) -> Affiliate:
    """The enabled affiliate ``name`` if ``credential`` is its own; else :class:`NotAuthenticated`.

    The hash comparison is constant-time (werkzeug uses ``hmac.compare_digest``), and an
    unknown name costs a hash too, so timing does not tell names apart.
    """
    affiliate = session.scalar(select(Affiliate).where(Affiliate.name == name))
    stored = affiliate.credential_hash if affiliate is not None else _DUMMY_HASH
    ok = check_password_hash(stored, credential)
    if affiliate is None or not ok:
        raise NotAuthenticated("bad_credential", "affiliate name or credential not recognised")
    if affiliate.disabled_at is not None:
        raise NotAuthenticated("disabled", f"affiliate {name!r} is disabled")
    return affiliate


def authenticate_bearer(session: Session, credential: str) -> Affiliate:
    """As :func:`authenticate`, for a credential given alone (``Authorization: Bearer``)."""
    name, separator, _ = credential.partition(_SEPARATOR)
    if not separator or not name:
        raise NotAuthenticated("bad_credential", "affiliate name or credential not recognised")
    return authenticate(session, name, credential)


_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))
