"""Reading a contacts CSV record by record, without letting one bad row stop the file.

Bytes that are not UTF-8, NUL bytes, control characters and fields over the csv module's size
limit are reported on the row they are in; the line reported is the line where the row starts
(a quoted field may span several lines).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from typing import IO, NamedTuple

# Stand-in for a NUL byte while the csv module reads the line (a lone surrogate that
# surrogateescape decoding never produces), so the row can say what is wrong with it.
NUL_MARK = "\udc00"
# Anything a field may not hold: controls (tab included; CR and LF are checked per field, as a
# quoted field may hold them), Unicode line separators, undecodable bytes and the NUL stand-in.
_SUSPECT = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_UNDECODED = re.compile("[\udc80-\udcff]")


class Record(NamedTuple):
    line: int  # where the row starts
    fields: list[str]
    suspect: bool  # some line of the row holds a character that fields are checked for


class BadField(ValueError):
    """A field holds something no contact field may hold; the message says what."""


def check_field(value: str) -> None:
    """Raise :class:`BadField` for undecodable bytes, NUL or control characters."""
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


def records(raw: IO[bytes], failed: list[tuple[int, str]]) -> Iterator[Record]:
    """The rows of ``raw`` (blank lines skipped). A row the csv module cannot read at all is
    appended to ``failed`` as (line, reason) and skipped."""
    suspect = False

    def lines() -> Iterator[str]:
        nonlocal suspect
        first = True
        while batch := raw.readlines(_BATCH):
            if first:
                first = False
                if batch[0].startswith(b"\xef\xbb\xbf"):
                    batch[0] = batch[0][3:]
            texts = [line.decode("utf-8", "surrogateescape") for line in batch]
            joined = "".join(texts)
            if "\x00" not in joined and not _SUSPECT.search(joined):
                yield from texts
                continue
            for text in texts:
                if "\x00" in text:
                    text = text.replace("\x00", NUL_MARK)
                if _SUSPECT.search(text):
                    suspect = True
                yield text

    reader = csv.reader(lines())
    while True:
        start = reader.line_num + 1
        suspect = False
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            failed.append((start, f"the row cannot be read as CSV ({exc})"))
            continue
        if fields:
            yield Record(start, fields, suspect)
