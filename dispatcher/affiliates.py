"""Affiliates: records, filtered exports, suppression feeds. Every release is audited.

Who may be shared is decided only by :func:`suppression.gate.affiliate_shareable`; which
fields leave is the affiliate's whitelist, drawn from a fixed allow-list (never ids).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, or_, select, union
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.security import check_password_hash, generate_password_hash

from dispatcher.db import session_scope
from dispatcher.models import Affiliate, AffiliateRelease, Contact
from dispatcher.settings import Settings
from suppression.address import InvalidAddress, address_digest, canonical_address
from suppression.events import Hit, record_event
from suppression.gate import affiliate_shareable
from suppression.models import (
    GLOBAL_SCOPE,
    Address,
    Consent,
    ConsentStatus,
    Scope,
    Suppression,
    affiliate_scope,
    utcnow,
)
from suppression.tokens import LinkPurpose, TokenSigner

CONTACT_FIELDS = ("email", "first_name", "last_name")
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{1,63}$")


class AffiliateError(ValueError):
    """A request about affiliates that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class Release:
    release_id: int
    path: Path | None
    rows: int
    sha256: str
    url: str | None


def valid_fields(text: str) -> list[str]:
    fields = [f.strip() for f in text.split(",") if f.strip()]
    if not fields:
        raise AffiliateError("--fields names no field (e.g. email,first_name,genre)")
    for field in fields:
        if field not in CONTACT_FIELDS and not _ATTRIBUTE.match(field):
            raise AffiliateError(
                f"field {field!r} cannot be shared: use {', '.join(CONTACT_FIELDS)}"
                " or an attribute name imported with the contacts"
            )
        if field in ("id", "contact_id", "address_id"):
            raise AffiliateError("ids are never shared with affiliates")
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
    credential = secrets.token_urlsafe(24)
    affiliate = Affiliate(
        name=name,
        contact_email=contact_email,
        fields=valid_fields(fields),
        credential_hash=generate_password_hash(credential),
        created_by=actor,
    )
    session.add(affiliate)
    session.flush()
    record_event(session, "affiliate_added", actor=actor, affiliate_id=affiliate.id)
    return affiliate, credential


def disable_affiliate(session: Session, name: str, *, actor: str | None) -> None:
    affiliate = get_affiliate(session, name)
    if affiliate.disabled_at is not None:
        raise AffiliateError(f"affiliate {name!r} is already disabled")
    affiliate.disabled_at = utcnow()
    record_event(session, "affiliate_disabled", actor=actor, affiliate_id=affiliate.id)


def authenticate(session: Session, name: str, credential: str) -> Affiliate | None:
    """The enabled affiliate ``name`` if ``credential`` is its own; None otherwise."""
    affiliate = session.scalar(select(Affiliate).where(Affiliate.name == name))
    # Hash something even for an unknown name, so timing does not tell names apart.
    stored = affiliate.credential_hash if affiliate is not None else _DUMMY_HASH
    ok = check_password_hash(stored, credential)
    if affiliate is None or not ok or affiliate.disabled_at is not None:
        return None
    return affiliate


_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))


def eligible_count(session: Session, affiliate: Affiliate) -> int:
    stmt = (
        select(func.count())
        .select_from(Contact)
        .where(affiliate_shareable(Contact.address_id, affiliate.id))
    )
    return int(session.scalar(stmt) or 0)


def export_rows(session: Session, affiliate: Affiliate) -> Iterator[list[str]]:
    """The whitelisted fields of every shareable contact, streamed (server-side cursor)."""
    stmt = (
        select(Address.address, Contact.first_name, Contact.last_name, Contact.attributes)
        .join(Address, Address.id == Contact.address_id)
        .where(affiliate_shareable(Contact.address_id, affiliate.id))
        .order_by(Contact.id)
        .execution_options(yield_per=1000)
    )
    for address, first, last, attributes in session.execute(stmt):
        known = {"email": address, "first_name": first or "", "last_name": last or ""}
        yield [
            known[f] if f in known else str((attributes or {}).get(f, "")) for f in affiliate.fields
        ]


class _HashingWriter(io.TextIOBase):
    def __init__(self, target: io.BufferedWriter) -> None:
        self.target = target
        self.digest = hashlib.sha256()

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.digest.update(data)
        self.target.write(data)
        return len(text)


def export(
    sessions: sessionmaker[Session],
    settings: Settings,
    name: str,
    *,
    actor: str | None,
    out: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> Release:
    """Write the affiliate's list as CSV (RFC 4180, UTF-8), audit it, sign a download URL."""
    with session_scope(sessions) as session:
        affiliate = get_affiliate(session, name)
        if affiliate.disabled_at is not None:
            raise AffiliateError(f"affiliate {name!r} is disabled")
        affiliate_id, fields = affiliate.id, list(affiliate.fields)
    folder = settings.home / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    path = out or folder / f"{name}-{stamp}-{secrets.token_hex(4)}.csv"
    rows = 0
    with sessions() as session, open(path, "wb") as raw:
        affiliate = session.get_one(Affiliate, affiliate_id)
        writer_target = _HashingWriter(raw)
        writer = csv.writer(writer_target, lineterminator="\r\n")
        writer.writerow(fields)
        for row in export_rows(session, affiliate):
            writer.writerow(row)
            rows += 1
            if progress is not None and rows % 1000 == 0:
                progress(1000)
        if progress is not None:
            progress(rows % 1000)
        digest = writer_target.digest.hexdigest()
    path.chmod(0o600)
    with session_scope(sessions) as session:
        release = AffiliateRelease(
            affiliate_id=affiliate_id,
            kind="export",
            requested_by=actor,
            row_count=rows,
            sha256=digest,
            path=str(path),
        )
        session.add(release)
        session.flush()
        record_event(
            session,
            "affiliate_export",
            actor=actor,
            outcome="written",
            affiliate_id=affiliate_id,
            release_id=release.id,
            rows=rows,
            sha256=digest,
        )
        release_id = release.id
    token = TokenSigner(settings.secret_keys).sign_timed(
        LinkPurpose.AFFILIATE_DOWNLOAD, {"r": release_id, "a": affiliate_id}
    )
    url = f"{settings.base_url}/affiliates/download/{token}"
    return Release(release_id, path, rows, digest, url)


def last_export_at(session: Session, affiliate_id: int) -> datetime | None:
    return session.scalar(
        select(func.max(AffiliateRelease.created_at)).where(
            AffiliateRelease.affiliate_id == affiliate_id, AffiliateRelease.kind == "export"
        )
    )


def withdrawn_digests(session: Session, affiliate: Affiliate, since: datetime | None) -> list[str]:
    """SHA-256 of every address suppressed for this affiliate, or that withdrew marketing or
    affiliate consent, since ``since`` (everything when None)."""
    scopes = [
        GLOBAL_SCOPE,
        str(Scope.MARKETING),
        str(Scope.AFFILIATES),
        affiliate_scope(affiliate.id),
    ]
    suppressed = select(Suppression.address_id).where(Suppression.scope.in_(scopes))
    withdrew = select(Consent.address_id).where(
        Consent.status == ConsentStatus.OPTED_OUT,
        or_(Consent.scope == str(Scope.MARKETING), Consent.scope == str(Scope.AFFILIATES)),
    )
    if since is not None:
        suppressed = suppressed.where(Suppression.created_at >= since)
        withdrew = withdrew.where(Consent.recorded_at >= since)
    ids = union(suppressed, withdrew).subquery()
    addresses = session.scalars(select(Address.address).where(Address.id.in_(select(ids))))
    return sorted(address_digest(a) for a in addresses)


def feed(
    session: Session,
    affiliate: Affiliate,
    *,
    since: datetime | None,
    actor: str | None,
    hit: Hit | None = None,
) -> tuple[list[str], datetime | None]:
    """The digests to purge since ``since`` (default: the affiliate's last export), recorded
    as a release."""
    start = since if since is not None else last_export_at(session, affiliate.id)
    digests = withdrawn_digests(session, affiliate, start)
    body = "".join(f"{d}\n" for d in digests).encode()
    digest = hashlib.sha256(body).hexdigest()
    release = AffiliateRelease(
        affiliate_id=affiliate.id,
        kind="feed",
        requested_by=actor,
        row_count=len(digests),
        sha256=digest,
        since=start,
    )
    session.add(release)
    session.flush()
    record_event(
        session,
        "affiliate_feed",
        actor=actor,
        hit=hit,
        outcome="served",
        affiliate_id=affiliate.id,
        release_id=release.id,
        rows=len(digests),
        sha256=digest,
        since=start.isoformat() if start else None,
    )
    return digests, start
