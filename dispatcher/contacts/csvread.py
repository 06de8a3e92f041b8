"""Reading a contacts CSV record by record, without letting one bad row stop the file.

Bytes that are not UTF-8, NUL bytes, control characters and fields over :data:`MAX_FIELD_CHARS`
are reported on the row they are in; the line reported is the line where the row starts (a
quoted field may span several lines), and a record knows the line where it ends.

What the csv module cannot read at all (a quote never closed, a field past its own limit) stops
the file with :class:`UnreadableCsv`: after such an error the reader no longer knows whether it
is inside a quoted field, so reading on could turn the text of a field (a CRM's notes) into
rows of their own, and an opt-in typed into a note would be imported as one.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import IO, NamedTuple

# Stand-in for a NUL byte while the csv module reads the line (a lone surrogate that
# surrogateescape decoding never produces), so the row can say what is wrong with it.
NUL_MARK = "\udc00"
# Given to the csv module after the file's last line (another lone surrogate no file yields):
# alone on its row when every quote was closed, inside the last field when one was not.
_END_MARK = "\udc01"
# Anything a field may not hold: controls (tab included; CR and LF are checked per field, as a
# quoted field may hold them), Unicode line separators, undecodable bytes and the NUL stand-in.
_SUSPECT = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_UNDECODED = re.compile("[\udc80-\udcff]")
# A longer field is a row error (the csv module's own default limit, which the README names).
MAX_FIELD_CHARS = 131_072
# The csv module's limit while reading, far above MAX_FIELD_CHARS so that a long field is read
# whole and reported on its row; a field past it is almost surely a quote never closed, and
# bounds the memory one field can take.
READ_LIMIT = 1 << 22
# The one csv error raised outside a quoted field (a CR in an unquoted field), after which the
# reader starts afresh on the next line, as a row of its own: that row alone is lost.
_BARE_CR = "new-line character seen in unquoted field"


class Record(NamedTuple):
    line: int  # where the row starts
    fields: list[str]
    suspect: bool  # some line of the row holds a character that fields are checked for
    end: int  # where the row ends (after ``line`` when a quoted field holds line breaks)


class BadField(ValueError):
    """A field holds something no contact field may hold; the message says what."""


class UnreadableCsv(ValueError):
    """The file cannot be read as CSV from a line on; the message names the lines."""


def check_field(value: str) -> None:
    """Raise :class:`BadField` for an over-long field, undecodable bytes, NUL or control
    characters."""
    if len(value) > MAX_FIELD_CHARS:
        raise BadField(f"is longer than {MAX_FIELD_CHARS:,} characters")
    if _UNDECODED.search(value):
        raise BadField("is not UTF-8 text (save the file as UTF-8)")
    if NUL_MARK in value:
        raise BadField("contains a NUL byte")
    found = _CONTROL.search(value)
    if found:
        char = found.group()
        if char in "\r\n\u2028\u2029":
            raise BadField("contains a line break")
        raise BadField(f"contains the control character U+{ord(char):04X}")


# Lines are read this many bytes at a time; a batch without a suspect character (nearly all)
# is decoded and checked once, not line by line.
_BATCH = 1 << 18


def _allow_long_fields() -> None:
    """Let the csv module read fields up to READ_LIMIT (the setting is the process's; it only
    ever grows here, so no other reader gets a smaller limit than it had)."""
    if csv.field_size_limit() < READ_LIMIT:
        csv.field_size_limit(READ_LIMIT)


def records(raw: IO[bytes], failed: list[tuple[int, str]]) -> Iterator[Record]:
    """The rows of ``raw`` (blank lines skipped). A row with a bare carriage return, which the
    csv module refuses outside quotes, is appended to ``failed`` as (line, reason) and skipped.
    Raises :class:`UnreadableCsv` where the csv module cannot go on (the caller imports
    nothing)."""
    suspect = False
    long_line = False
    count = 0  # lines of the file handed to the csv module

    def lines() -> Iterator[str]:
        nonlocal suspect, long_line, count
        first = True
        while batch := raw.readlines(_BATCH):
            if first:
                first = False
                if batch[0].startswith(b"\xef\xbb\xbf"):
                    batch[0] = batch[0][3:]
            texts = [line.decode("utf-8", "surrogateescape") for line in batch]
            joined = "".join(texts)
            if (
                "\x00" not in joined
                and not _SUSPECT.search(joined)
                and max(map(len, texts)) <= MAX_FIELD_CHARS
            ):
                count += len(texts)
                yield from texts
                continue
            for text in texts:
                if "\x00" in text:
                    text = text.replace("\x00", NUL_MARK)
                if _SUSPECT.search(text):
                    suspect = True
                if len(text) > MAX_FIELD_CHARS:
                    long_line = True
                count += 1
                yield text
        yield _END_MARK

    _allow_long_fields()
    reader = csv.reader(lines())
    while True:
        start = reader.line_num + 1
        suspect = long_line = False
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if str(exc).startswith(_BARE_CR):  # outside quotes: the next line starts a row
                failed.append((start, "the row holds a carriage return (CR) outside quotes"))
                continue
            raise UnreadableCsv(_unreadable(start, min(reader.line_num, count), exc)) from None
        end = reader.line_num
        if end > count:  # the end mark was read: alone on its row, or inside an open quote
            if fields != [_END_MARK]:
                raise UnreadableCsv(_never_closed(start, count))
            return
        if long_line or end > start:  # rare: look for an over-long field
            suspect = suspect or _over_long(fields)  # check_field names the field
        if fields:
            yield Record(start, fields, suspect, end)


def _never_closed(start: int, last: int) -> str:
    """The message for a quoted field that runs from the row at ``start`` to the file's end."""
    span = f"lines {start}–{last}" if last > start else f"line {start}"
    return (
        f"line {start}: a quoted field opens on this row and is never closed, so {span} (to "
        "the end of the file) cannot be read as rows; nothing was imported: close the quote "
        "(or double it) and import again"
    )


def _over_long(fields: list[str]) -> bool:
    """Whether a field is too long (looked at only for rows over several lines or long lines)."""
    return any(len(f) > MAX_FIELD_CHARS for f in fields)


def _unreadable(start: int, end: int, exc: csv.Error) -> str:
    """The message for a csv error, which leaves the reader unsure where the next row starts."""
    if "field limit" in str(exc):
        return (
            f"line {start}: a field of this row runs past {READ_LIMIT:,} characters "
            f"(to line {end}), most likely a quote that is never closed; "
            "nothing was imported: close the quote and import again"
        )
    return f"lines {start}–{end} cannot be read as CSV ({exc}); nothing was imported"
