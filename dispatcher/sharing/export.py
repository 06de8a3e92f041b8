"""Releases to affiliates: the filtered export and the suppression feed. Each is audited.

An export first records, in one set-based statement, which addresses the gate
(:func:`suppression.gate.affiliate_shareable`) lets this affiliate have (``affiliate_shares``),
then streams exactly those contacts to the CSV. The file therefore equals the recorded set
whatever the database's isolation level, and the suppression feed can be limited to addresses
the affiliate already holds: it never tells an affiliate who else is on our lists.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import exists, literal, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.models import Affiliate, AffiliateRelease, AffiliateShare, Contact
from dispatcher.settings import Settings
from dispatcher.sharing.affiliates import AffiliateError, get_affiliate
from dispatcher.sharing.cells import safe_row, spreadsheet_writer
from suppression.address import address_digest, delivery_address
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
from suppression.sql import insert_for
from suppression.tokens import LinkPurpose, TokenSigner

CHUNK = 1000
# Called every CHUNK rows with (rows written, rows expected).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Release:
    """An export written and audited, and the signed URL that serves it."""

    release_id: int
    affiliate_id: int
    path: Path
    rows: int
    sha256: str
    url: str


@dataclass(frozen=True)
class Feed:
    """Digests an affiliate must purge; ``basis`` says what they are relative to."""

    release_id: int
    digests: list[str]
    basis: str


def export(
    sessions: sessionmaker[Session],
    settings: Settings,
    name: str,
    *,
    actor: str | None,
    out: Path | None = None,
    progress: Progress | None = None,
) -> Release:
    """Write ``name``'s list, audit it and sign its download URL, in one transaction."""
    with session_scope(sessions) as session:
        affiliate = get_affiliate(session, name)
        return write_export(session, settings, affiliate, actor=actor, out=out, progress=progress)


def write_export(
    session: Session,
    settings: Settings,
    affiliate: Affiliate,
    *,
    actor: str | None,
    out: Path | None = None,
    progress: Progress | None = None,
) -> Release:
    """The work of :func:`export` inside the caller's transaction (committed by the caller).

    CSV per RFC 4180 in UTF-8, a header of the whitelisted fields, one row per contact;
    written to a private temporary file and renamed into place once complete.
    """
    if affiliate.disabled_at is not None:
        raise AffiliateError(f"affiliate {affiliate.name!r} is disabled")
    folder = settings.home / "exports"
    path = out or folder / f"{affiliate.name}-{utcnow():%Y%m%dT%H%M%S}-{secrets.token_hex(4)}.csv"
    if path.exists():
        raise AffiliateError(f"--out {path}: a file of that name exists already")
    path.parent.mkdir(parents=True, exist_ok=True)
    release = AffiliateRelease(
        affiliate_id=affiliate.id,
        kind="export",
        requested_by=actor,
        row_count=0,
        sha256="",
        path=str(path.resolve()),
        created_at=utcnow(),
    )
    session.add(release)
    session.flush()
    expected = _share(session, affiliate.id, release.id)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as raw:
            rows, digest = _write_csv(
                raw, affiliate.fields, _rows(session, affiliate, release.id), expected, progress
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    release.row_count, release.sha256 = rows, digest
    record_event(
        session,
        "affiliate_export",
        actor=actor,
        outcome="written",
        affiliate_id=affiliate.id,
        release_id=release.id,
        rows=rows,
        sha256=digest,
    )
    token = TokenSigner(settings.secret_keys).sign_timed(
        LinkPurpose.AFFILIATE_DOWNLOAD, {"r": release.id, "a": affiliate.id}
    )
    url = f"{settings.base_url}/affiliates/download/{token}"
    return Release(release.id, affiliate.id, path, rows, digest, url)


def _share(session: Session, affiliate_id: int, release_id: int) -> int:
    """Record every address the gate lets ``affiliate_id`` have as part of ``release_id``."""
    shareable = select(literal(affiliate_id), Contact.address_id, literal(release_id)).where(
        affiliate_shareable(Contact.address_id, affiliate_id)
    )
    stmt = insert_for(session, AffiliateShare).from_select(
        ["affiliate_id", "address_id", "release_id"], shareable
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["affiliate_id", "address_id"],
        set_={"release_id": stmt.excluded.release_id},
    )
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


def _rows(session: Session, affiliate: Affiliate, release_id: int) -> Iterator[list[str]]:
    """The whitelisted fields of every contact in the release, streamed (server-side cursor)."""
    stmt = (
        select(Contact.submitted_address, Contact.first_name, Contact.last_name, Contact.attributes)
        .select_from(AffiliateShare)
        .join(Contact, Contact.address_id == AffiliateShare.address_id)
        .where(AffiliateShare.affiliate_id == affiliate.id, AffiliateShare.release_id == release_id)
        .order_by(Contact.id)
        .execution_options(yield_per=CHUNK)
    )
    fields = list(affiliate.fields)
    for submitted, first, last, attributes in session.execute(stmt):
        # The address as the person gave it (what mail goes to), not our matching key.
        known = {
            "email": delivery_address(submitted),
            "first_name": first or "",
            "last_name": last or "",
        }
        extra = attributes or {}
        yield safe_row(known[f] if f in known else _text(extra.get(f)) for f in fields)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


class _HashingText:
    """A text sink for ``csv.writer`` that encodes to UTF-8, hashes and writes through."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.digest = hashlib.sha256()

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.digest.update(data)
        self.target.write(data)
        return len(text)


def _write_csv(
    raw: IO[bytes],
    header: list[str],
    rows: Iterator[list[str]],
    expected: int,
    progress: Progress | None,
) -> tuple[int, str]:
    sink = _HashingText(raw)
    writer = spreadsheet_writer(sink)
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
        if progress is not None and count % CHUNK == 0:
            progress(count, expected)
    if progress is not None:
        progress(count, expected)
    return count, sink.digest.hexdigest()


def last_export(session: Session, affiliate_id: int) -> AffiliateRelease | None:
    return session.scalar(
        select(AffiliateRelease)
        .where(AffiliateRelease.affiliate_id == affiliate_id, AffiliateRelease.kind == "export")
        .order_by(AffiliateRelease.id.desc())
        .limit(1)
    )


def withdrawn_digests(
    session: Session, affiliate_id: int, *, since: datetime | None, release_id: int | None
) -> list[str]:
    """SHA-256 of canonical addresses this affiliate holds but may no longer have.

    Only addresses it received (``affiliate_shares``) and that the gate now refuses. With
    ``release_id``: those in that export. With ``since``: those, from any export, that were
    suppressed (globally, for marketing, affiliates or this affiliate) or withdrew marketing
    or affiliates consent at or after ``since``.
    """
    held = AffiliateShare.affiliate_id == affiliate_id
    stmt = (
        select(Address.address, AffiliateShare.erased_digest)
        .select_from(AffiliateShare)
        .join(Address, Address.id == AffiliateShare.address_id)
        .where(held, ~affiliate_shareable(AffiliateShare.address_id, affiliate_id))
    )
    if release_id is not None:
        stmt = stmt.where(AffiliateShare.release_id == release_id)
    if since is not None:
        scopes = [GLOBAL_SCOPE, str(Scope.MARKETING), str(Scope.AFFILIATES)]
        suppressed = exists().where(
            Suppression.address_id == AffiliateShare.address_id,
            Suppression.scope.in_([*scopes, affiliate_scope(affiliate_id)]),
            Suppression.created_at >= since,
        )
        withdrew = exists().where(
            Consent.address_id == AffiliateShare.address_id,
            Consent.scope.in_(scopes[1:]),
            Consent.status == str(ConsentStatus.OPTED_OUT),
            Consent.recorded_at >= since,
        )
        stmt = stmt.where(suppressed | withdrew)
    # An erased person's address is gone; the share row keeps the digest the affiliate holds.
    return sorted(erased or address_digest(a) for a, erased in session.execute(stmt))


def feed(
    session: Session,
    affiliate: Affiliate,
    *,
    since: datetime | None,
    actor: str | None,
    hit: Hit | None = None,
) -> Feed:
    """The digests to purge, recorded as a release and an audit event.

    Without ``since``: everyone in the affiliate's latest export who may no longer be shared
    (an affiliate that replaces its list with each export needs nothing older). An affiliate
    that was never sent a list gets an empty feed.
    """
    if affiliate.disabled_at is not None:
        raise AffiliateError(f"affiliate {affiliate.name!r} is disabled")
    basis_release: int | None = None
    if since is not None:
        if since.tzinfo is None:
            raise AffiliateError("--since needs a time zone (e.g. 2025-01-01T00:00:00+00:00)")
        digests = withdrawn_digests(session, affiliate.id, since=since, release_id=None)
        basis = f"since {since.isoformat()}"
    else:
        latest = last_export(session, affiliate.id)
        basis_release = latest.id if latest is not None else None
        digests = (
            withdrawn_digests(session, affiliate.id, since=None, release_id=latest.id)
            if latest is not None
            else []
        )
        basis = (
            f"since export {latest.id} of {latest.created_at.isoformat()}"
            if latest is not None
            else "no export was ever sent"
        )
    digest = hashlib.sha256(feed_body(digests).encode()).hexdigest()
    release = AffiliateRelease(
        affiliate_id=affiliate.id,
        kind="feed",
        requested_by=actor,
        row_count=len(digests),
        sha256=digest,
        since=since,
        created_at=utcnow(),
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
        since=since.isoformat() if since else None,
        basis_release_id=basis_release,
    )
    return Feed(release.id, digests, basis)


def feed_body(digests: list[str]) -> str:
    """The feed as served and hashed: one lower-case hex digest per line."""
    return "".join(f"{d}\n" for d in digests)
