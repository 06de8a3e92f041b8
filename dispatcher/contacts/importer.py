"""Importing contacts and their consent from CSV: streamed, set-based, all or nothing.

Rows are parsed and checked in Python; every problem is reported with the line where its row
starts, the field and the reason, and the row is skipped. The valid rows are loaded into
temporary tables and merged in one transaction (see :mod:`dispatcher.contacts.staging`), so an
import either goes in whole or leaves nothing behind. Consent follows the rule in
:mod:`suppression.consent`: the latest word per address and scope wins, an opt-out wins a tie,
older rows are kept as history, and an import never turns an opt-out into an opt-in.
"""

from __future__ import annotations

import codecs
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.csvread import BadField, Record, UnreadableCsv, check_field, records
from dispatcher.contacts.mapping import Layout, layout_for
from dispatcher.contacts.staging import Stage, StagedRow, merge
from dispatcher.db import session_scope
from suppression.address import InvalidAddress, canonical_address
from suppression.consent import REFUSED_REASON, Verdict
from suppression.erasure import any_erased, erased_among
from suppression.events import record_event
from suppression.models import ConsentStatus, utcnow
from suppression.tokens import TokenSigner

_YES = {"yes", "y", "true", "1", "opted_in", "opt_in", "in"}
_NO = {"no", "n", "false", "0", "opted_out", "opt_out", "out"}
MAX_FIELD = 200
MAX_TAG = 100  # ContactTag.tag's column length
# A consent time before this is refused (row error). The latest word wins, so a wrong date
# decides: the stand-ins systems write for "no date" (0001-01-01 of Go and .NET, 1753-01-01 of
# SQL Server, 1899/1900 of spreadsheets, 1970-01-01 of Unix, in any time zone) and typos (0999
# for 1999) would date an opt-out before every opt-in. No e-mail consent is that old (SMTP is
# of 1982), and an opt-out without a date, which is what these mean, counts as of the import.
EARLIEST_CONSENT = datetime(1980, 1, 1, tzinfo=UTC)
_JSON = json.JSONEncoder(ensure_ascii=False).encode


ERASED_REASON = "this address was erased at its owner's request and cannot be added again"


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
    # "scope:verdict" -> facts (suppression.consent.Verdict: changed, renewed, history,
    # refused, known)
    consent: Counter[str] = field(default_factory=Counter)
    refused: list[RowError] = field(default_factory=list)

    @property
    def invalid(self) -> int:
        return len({e.line for e in self.errors})

    def count(self, verdict: Verdict) -> int:
        return sum(n for k, n in self.consent.items() if k.endswith(f":{verdict}"))


def _consent_value(text: str) -> str | None:
    value = text.strip().lower()
    if not value:
        return None
    if value in _YES:
        return str(ConsentStatus.OPTED_IN)
    if value in _NO:
        return str(ConsentStatus.OPTED_OUT)
    raise ValueError(f"{text!r} is not a consent value (use yes or no; empty if never asked)")


_UNKNOWN = "(not a consent word)"  # never a value of _CONSENT
# The consent words as files write them, straight to their value (others go the long way).
_CONSENT: dict[str, str | None] = {
    **{w: str(ConsentStatus.OPTED_IN) for word in _YES for w in (word, word.upper())},
    **{w: str(ConsentStatus.OPTED_OUT) for word in _NO for w in (word, word.upper())},
    **{"Yes": str(ConsentStatus.OPTED_IN), "No": str(ConsentStatus.OPTED_OUT), "": None},
}


@lru_cache(maxsize=1 << 12)
def _tags(given: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """A row's tags (trimmed, lower-case, sorted, once each) and the first one too long."""
    tags = tuple(sorted({t.strip().lower() for t in given if t.strip()}))
    return tags, next((t for t in tags if len(t) > MAX_TAG), None)


@lru_cache(maxsize=1 << 12)
def _attributes_json(items: tuple[tuple[str, str], ...]) -> str:
    return _JSON(dict(items))


def _timestamp(text: str, now: datetime) -> datetime | None:
    parsed = _parse_time(text)
    if parsed is not None and parsed > now:
        raise ValueError(f"{text!r} is in the future")
    return parsed


@lru_cache(maxsize=1 << 16)  # exports repeat their times (a day, a campaign's send)
def _parse_time(text: str) -> datetime | None:
    """The UTC time ``text`` names, or None when empty; ValueError when it is no time or one
    before EARLIEST_CONSENT."""
    try:
        parsed = _iso_time(text)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the calendar's first day in UTC
        raise ValueError(f"{text!r} is outside the calendar") from None
    if parsed is not None and parsed < EARLIEST_CONSENT:
        raise ValueError(
            f"{text!r} is before {EARLIEST_CONSENT.year}, older than any consent record: a "
            "placeholder or a typo? Leave it empty if the date is unknown"
        )
    return parsed


def _iso_time(text: str) -> datetime | None:
    """``text`` as an ISO-8601 date or time in UTC (naive ones taken as UTC)."""
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
    return parsed.astimezone(UTC)


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if "\n" in value or "\r" in value:
        raise ValueError("contains a line break")
    if len(value) > MAX_FIELD:
        raise ValueError(f"is longer than {MAX_FIELD} characters")
    return value or None


class _Parser:
    """Turns records into staged rows, reporting what is wrong with the others."""

    def __init__(self, layout: Layout, source: str, now: datetime, errors: list[RowError]):
        self.layout = layout
        self.source = source
        self.now = now
        self.errors = errors

    def parse(self, record: Record) -> tuple[StagedRow, Sequence[str]] | None:
        line = record.line
        layout = self.layout
        if len(record.fields) > layout.width:
            self.errors.append(RowError(line, "(row)", "the row has more fields than the header"))
            return None
        if record.suspect:
            bad = False
            for name, value in zip(layout.header, record.fields, strict=False):
                try:
                    check_field(value)
                except BadField as exc:
                    self.errors.append(RowError(line, name, str(exc)))
                    bad = True
            if bad:
                return None
        try:
            values = layout.extract(record.fields)
        except ValueError as exc:
            column, _, reason = str(exc).partition(": ")
            self.errors.append(RowError(line, column, reason))
            return None
        errors = self.errors
        errors_before = len(errors)

        def fail(name: str, reason: str) -> None:
            errors.append(RowError(line, layout.column_of(name), reason))

        raw = values.email or ""
        try:
            address = canonical_address(raw)
        except InvalidAddress as exc:
            fail("email", str(exc))
            return None
        # Straight-line and cached where files repeat themselves (consent words, times, tag
        # lists, attribute sets): this runs once per row of a million-row file.
        try:
            first_name = _text(values.first_name)
        except ValueError as exc:
            fail("first_name", str(exc))
        try:
            last_name = _text(values.last_name)
        except ValueError as exc:
            fail("last_name", str(exc))
        try:
            consent_source = _text(values.consent_source)
        except ValueError as exc:
            fail("consent_source", str(exc))
        marketing = _CONSENT.get(values.marketing_consent or "", _UNKNOWN)
        if marketing == _UNKNOWN:
            try:
                marketing = _consent_value(values.marketing_consent or "")
            except ValueError as exc:
                fail("marketing_consent", str(exc))
        affiliates = _CONSENT.get(values.affiliates_consent or "", _UNKNOWN)
        if affiliates == _UNKNOWN:
            try:
                affiliates = _consent_value(values.affiliates_consent or "")
            except ValueError as exc:
                fail("affiliates_consent", str(exc))
        try:
            consent_at = _timestamp(values.consent_at or "", self.now)
        except ValueError as exc:
            fail("consent_at", str(exc))
            consent_at = None
        tags, long_tag = _tags(tuple(values.tags))
        if long_tag is not None:
            fail("tags", f"the tag {long_tag[:20]!r}... is longer than {MAX_TAG} characters")
        attributes: dict[str, str] = {}
        for key, value in values.attributes.items():
            try:
                kept = _text(value)
            except ValueError as exc:
                errors.append(RowError(line, layout.column_of(key), str(exc)))
                continue
            if kept is not None:
                attributes[key] = kept
        if len(errors) > errors_before:
            return None
        row: StagedRow = (
            line,
            address,
            raw.strip(),
            first_name,
            last_name,
            consent_source or self.source,
            consent_at,
            marketing,
            affiliates,
            _attributes_json(tuple(attributes.items())) if attributes else None,
        )
        return row, tags


def import_contacts(
    sessions: sessionmaker[Session],
    path: Path | str,
    *,
    source: str,
    actor: str | None = None,
    policy_version: str | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = 5000,
    mapping: dict[str, str] | str | None = None,
    preset: str | None = None,
    signer: TokenSigner | None = None,
) -> ImportReport:
    """Import ``path`` in one transaction. ``progress`` gets bytes read as the file is read.

    ``mapping`` renames the file's columns (``{"Email Address": "email", ...}`` or the
    ``"Email Address=email,..."`` text of ``--map``); ``preset`` reads another product's
    export (see :mod:`dispatcher.contacts.mapping`). Raises :class:`ImportFileError`, having
    imported nothing, when the file as a whole cannot be imported.

    ``signer`` recognises addresses erased at their owner's request, which are refused row by
    row; it may be left out only while no address was ever erased.
    """
    report = ImportReport()
    now = utcnow()
    with _open_bytes(path) as raw, session_scope(sessions) as session:
        failed: list[tuple[int, str]] = []
        rows = records(raw, failed)
        try:
            header = next(rows, None)
        except UnreadableCsv as exc:
            raise ImportFileError(str(exc)) from None
        if header is None:
            raise ImportFileError("the file is empty (no header row)")
        if header.suspect:
            raise ImportFileError("the header row holds bytes that are not UTF-8 text")
        try:
            layout = layout_for(header.fields, mapping=mapping, preset=preset)
        except ValueError as exc:
            raise ImportFileError(str(exc)) from None
        parser = _Parser(layout, source[:MAX_FIELD], now, report.errors)
        if signer is None and any_erased(session):
            raise ImportFileError("addresses were erased on request: this import needs the signer")
        stage = Stage(session)
        staged: list[StagedRow] = []
        tags: list[tuple[str, str]] = []
        last_pos = 0

        def flush() -> None:
            nonlocal last_pos
            if signer is not None and staged:
                _refuse_erased(session, signer, staged, tags, layout, report)
            stage.load(staged, tags)
            staged.clear()
            tags.clear()
            if progress is not None:
                position = raw.tell()
                progress(position - last_pos)
                last_pos = position

        for record in _counted(rows, report):
            parsed = parser.parse(record)
            if parsed is not None:
                row, row_tags = parsed
                staged.append(row)
                tags.extend((row[1], tag) for tag in row_tags)
            elif record.end > record.line:
                report.errors.append(_spanned(record))
            if len(staged) >= chunk_size:
                flush()
        flush()
        for line, reason in failed:
            report.read += 1
            report.errors.append(RowError(line, "(row)", reason))
        report.errors.sort(key=lambda e: e.line)
        merged = merge(stage, actor=actor, policy_version=policy_version, now=now)
        stage.drop()
        report.created, report.updated, report.unchanged = (
            merged.created,
            merged.updated,
            merged.unchanged,
        )
        report.consent.update(merged.consent.counts)
        report.refused = [
            RowError(line, layout.column_of(f"{scope}_consent"), REFUSED_REASON)
            for line, scope in merged.consent.refused
        ]
        record_event(
            session,
            "contacts_imported",
            actor=actor,
            outcome="imported",
            source=source,
            read=report.read,
            invalid=report.invalid,
            created=report.created,
            updated=report.updated,
            unchanged=report.unchanged,
            consent=dict(report.consent),
        )
    return report


def _refuse_erased(
    session: Session,
    signer: TokenSigner,
    staged: list[StagedRow],
    tags: list[tuple[str, str]],
    layout: Layout,
    report: ImportReport,
) -> None:
    """Drop the rows of addresses erased at their owner's request, each reported by line."""
    erased = erased_among(session, signer, [row[1] for row in staged])
    if not erased:
        return
    for row in staged:
        if row[1] in erased:
            report.errors.append(RowError(row[0], layout.column_of("email"), ERASED_REASON))
    staged[:] = [row for row in staged if row[1] not in erased]
    tags[:] = [tag for tag in tags if tag[0] not in erased]


def _spanned(record: Record) -> RowError:
    """An invalid row over several lines: which lines it took, so that rows swallowed by a
    quote opened by mistake (and closed by another, far below) are not lost unseen."""
    return RowError(
        record.line,
        "(row)",
        f"this row runs over lines {record.line}–{record.end} (a quoted field holds line "
        "breaks; if a quote was left open by mistake, those lines are rows not imported)",
    )


def _counted(rows: Iterator[Record], report: ImportReport) -> Iterator[Record]:
    """The records, counted as read; a file the csv module cannot read on is refused whole."""
    try:
        for record in rows:
            report.read += 1
            yield record
    except UnreadableCsv as exc:
        raise ImportFileError(str(exc)) from None


@contextmanager
def _open_bytes(path: Path | str) -> Iterator[IO[bytes]]:
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror}") from None
    with raw:
        yield raw


@contextmanager
def open_csv(path: Path | str) -> Iterator[tuple[IO[bytes], IO[str]]]:
    """The file as bytes and as UTF-8 text, for small staff files (suppressions) read whole:
    ImportFileError, reading nothing into the database, when it is not UTF-8."""
    with _open_bytes(path) as raw:
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
