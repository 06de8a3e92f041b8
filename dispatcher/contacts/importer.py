"""Importing contacts and their consent from CSV: streamed, chunked, idempotent.

Invalid rows are reported with their line, field and reason and skipped; the rest go in.
An import records consent through :func:`suppression.consent.record_consent`, which never
lets an import turn an opt-out back into an opt-in.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.models import Contact, ContactTag
from suppression.address import InvalidAddress, canonical_address
from suppression.consent import ConsentOutcome, record_consent
from suppression.models import ConsentState, ConsentStatus, Scope, utcnow
from suppression.registry import ensure_addresses
from suppression.sql import insert_for

REQUIRED_COLUMNS = ("email",)
KNOWN_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "marketing_consent",
    "affiliates_consent",
    "consent_source",
    "consent_at",
    "tags",
)
CONSENT_COLUMNS = {"marketing_consent": Scope.MARKETING, "affiliates_consent": Scope.AFFILIATES}
_YES = {"yes", "y", "true", "1", "opted_in", "opt_in", "in"}
_NO = {"no", "n", "false", "0", "opted_out", "opt_out", "out"}
MAX_FIELD = 200
MAX_TAG = 100  # ContactTag.tag's column length


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (nothing was); the message says why."""


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    reason: str


@dataclass
class ImportReport:
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    consent: Counter[str] = field(default_factory=Counter)

    @property
    def invalid(self) -> int:
        return len({e.line for e in self.errors})


@dataclass(frozen=True)
class _Row:
    line: int
    address: str
    submitted: str
    first_name: str | None
    last_name: str | None
    consents: dict[Scope, ConsentStatus]
    consent_source: str | None
    consent_at: datetime | None
    tags: frozenset[str]
    attributes: dict[str, str]


def _consent_value(text: str) -> ConsentStatus | None:
    value = text.strip().lower()
    if not value:
        return None
    if value in _YES:
        return ConsentStatus.OPTED_IN
    if value in _NO:
        return ConsentStatus.OPTED_OUT
    raise ValueError(f"{text!r} is not a consent value (use yes or no; empty if never asked)")


def _timestamp(text: str) -> datetime | None:
    value = text.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO-8601 date or time") from None
        parsed = datetime(day.year, day.month, day.day)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed > utcnow():
        raise ValueError(f"{text!r} is in the future")
    return parsed.astimezone(UTC)


def _text(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if any(ch in value for ch in "\r\n\x00"):
        raise ValueError("contains a line break")
    if len(value) > MAX_FIELD:
        raise ValueError(f"is longer than {MAX_FIELD} characters")
    return value or None


def _parse(
    line: int, record: dict[str, str | None], extra: list[str], errors: list[RowError]
) -> _Row | None:
    def fail(field_name: str, reason: str) -> None:
        errors.append(RowError(line, field_name, reason))

    raw = record.get("email") or ""
    try:
        address = canonical_address(raw)
    except InvalidAddress as exc:
        fail("email", str(exc))
        return None
    bad = False
    names: dict[str, str | None] = {}
    for name in ("first_name", "last_name", "consent_source"):
        try:
            names[name] = _text(record.get(name), name)
        except ValueError as exc:
            fail(name, str(exc))
            bad = True
    consents: dict[Scope, ConsentStatus] = {}
    for column, scope in CONSENT_COLUMNS.items():
        try:
            status = _consent_value(record.get(column) or "")
        except ValueError as exc:
            fail(column, str(exc))
            bad = True
            continue
        if status is not None:
            consents[scope] = status
    try:
        consent_at = _timestamp(record.get("consent_at") or "")
    except ValueError as exc:
        fail("consent_at", str(exc))
        bad = True
        consent_at = None
    tags = frozenset(t.strip().lower() for t in (record.get("tags") or "").split(";") if t.strip())
    long_tags = [t for t in tags if len(t) > MAX_TAG]
    if long_tags:
        fail("tags", f"the tag {long_tags[0][:20]!r}... is longer than {MAX_TAG} characters")
        bad = True
    attributes = {}
    for key in extra:
        try:
            value = _text(record.get(key), key)
        except ValueError as exc:
            fail(key, str(exc))
            bad = True
            continue
        if value is not None:
            attributes[key] = value
    if bad:
        return None
    return _Row(
        line,
        address,
        raw.strip(),
        names["first_name"],
        names["last_name"],
        consents,
        names["consent_source"],
        consent_at,
        tags,
        attributes,
    )


def _rows(handle: IO[str], errors: list[RowError]) -> Iterator[tuple[_Row | None, int]]:
    reader = csv.DictReader(handle, restval=None)
    header = [h.strip() if h else "" for h in (reader.fieldnames or [])]
    if not header:
        raise ImportFileError("the file is empty (no header row)")
    reader.fieldnames = header
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ImportFileError(
            f"the header lacks the column(s) {', '.join(missing)} (found: {', '.join(header)})"
        )
    dupes = {h for h in header if header.count(h) > 1}
    if dupes:
        raise ImportFileError(f"the header names {', '.join(sorted(dupes))} twice")
    extra = [h for h in header if h and h not in KNOWN_COLUMNS]
    for record in reader:
        line = reader.line_num
        if None in record:
            errors.append(RowError(line, "(row)", "the row has more fields than the header"))
            yield None, line
            continue
        yield _parse(line, record, extra, errors), line


def _apply(
    session: Session,
    rows: list[_Row],
    report: ImportReport,
    *,
    source: str,
    actor: str | None,
    policy_version: str | None,
) -> None:
    """One chunk, in one transaction: a handful of set-based statements plus the consent
    changes, which go through the ledger's own function one by one."""
    ids = ensure_addresses(session, [r.address for r in rows])
    address_ids = list(ids.values())
    existing = {
        c.address_id: c
        for c in session.scalars(select(Contact).where(Contact.address_id.in_(address_ids)))
    }
    # Loaded into the identity map so record_consent's lookup by key costs no query.
    session.scalars(select(ConsentState).where(ConsentState.address_id.in_(address_ids))).all()
    have_tags = set(
        session.execute(
            select(ContactTag.contact_id, ContactTag.tag).where(
                ContactTag.contact_id.in_([c.id for c in existing.values()])
            )
        ).all()
    )
    now = utcnow()
    changed: set[int] = set()  # address ids of existing contacts this chunk changed
    contacts: dict[int, Contact] = dict(existing)
    for row in rows:
        address_id = ids[row.address]
        contact = existing.get(address_id)
        if contact is None:
            contacts[address_id] = Contact(
                address_id=address_id,
                submitted_address=row.submitted,
                first_name=row.first_name,
                last_name=row.last_name,
                attributes=row.attributes,
                source=row.consent_source or source,
                collected_at=row.consent_at or now,
            )
            session.add(contacts[address_id])
            continue
        for name, value in (("first_name", row.first_name), ("last_name", row.last_name)):
            if value is not None and getattr(contact, name) != value:
                setattr(contact, name, value)
                changed.add(address_id)
        merged = {**contact.attributes, **row.attributes}
        if merged != contact.attributes:
            contact.attributes = merged
            changed.add(address_id)
    session.flush()  # new contacts in one batch, so the consent loop flushes little
    with session.no_autoflush:
        for row in rows:
            address_id = ids[row.address]
            for scope, status in row.consents.items():
                outcome = record_consent(
                    session,
                    address_id,
                    scope,
                    status,
                    source=row.consent_source or source,
                    occurred_at=row.consent_at or now,
                    actor=actor,
                    policy_version=policy_version,
                )
                report.consent[f"{scope}:{outcome}"] += 1
                if outcome == ConsentOutcome.RECORDED:
                    changed.add(address_id)
    new_tags = []
    for row in rows:
        contact_id = contacts[ids[row.address]].id
        for tag in sorted(row.tags):
            if (contact_id, tag) not in have_tags:
                new_tags.append({"contact_id": contact_id, "tag": tag})
                changed.add(ids[row.address])
    if new_tags:
        session.execute(insert_for(session, ContactTag).values(new_tags).on_conflict_do_nothing())
    for row in rows:
        address_id = ids[row.address]
        if address_id not in existing:
            report.created += 1
        elif address_id in changed:
            report.updated += 1
        else:
            report.unchanged += 1


def import_contacts(
    sessions: sessionmaker[Session],
    path: Path | str,
    *,
    source: str,
    actor: str | None = None,
    policy_version: str | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = 1000,
) -> ImportReport:
    """Import ``path``; commits every ``chunk_size`` rows. ``progress`` gets bytes read."""
    report = ImportReport()

    def commit(rows: list[_Row]) -> None:
        with session_scope(sessions) as session:
            _apply(session, rows, report, source=source, actor=actor, policy_version=policy_version)

    with open_csv(path) as (raw, handle):
        chunk: list[_Row] = []
        seen: dict[str, int] = {}
        last_pos = 0
        for row, line in _rows(handle, report.errors):
            report.read += 1
            if row is not None:
                first = seen.setdefault(row.address, line)
                if first != line:
                    report.errors.append(
                        RowError(line, "email", f"the same address as line {first}; skipped")
                    )
                else:
                    chunk.append(row)
            if len(chunk) >= chunk_size:
                commit(chunk)
                chunk = []
                if progress is not None:
                    position = raw.tell()
                    progress(position - last_pos)
                    last_pos = position
        if chunk:
            commit(chunk)
        if progress is not None:
            progress(raw.tell() - last_pos)
    return report


@contextmanager
def open_csv(path: Path | str) -> Iterator[tuple[IO[bytes], IO[str]]]:
    """The file as bytes (for progress) and as UTF-8 text; ImportFileError, reading nothing
    into the database, when it cannot be read or is not UTF-8."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror}") from None
    with raw:
        check_utf8(raw)
        yield raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def check_utf8(raw: IO[bytes]) -> None:
    """Refuse a file that is not UTF-8 before importing any of it."""
    incremental = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        for block in iter(lambda: raw.read(1 << 16), b""):
            incremental.decode(block)
            line += block.count(b"\n")
        incremental.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ImportFileError(
            f"the file is not UTF-8 (near line {line}); save it as UTF-8 CSV and import again"
        ) from None
    raw.seek(0)
