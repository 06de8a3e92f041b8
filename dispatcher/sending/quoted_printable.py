"""Quoted-printable bodies (RFC 2045 6.7), and a campaign's lines encoded once.

:func:`encode` turns a text part into CRLF lines of at most 76 octets. It costs about as much
as everything else in building a message (``binascii.b2a_qp`` on 7 KB of HTML: 37 µs), yet
most of a campaign's lines are the same for every recipient. :class:`EncodedPart` encodes
those once: quoted-printable works line by line (a hard line break ends every soft-broken
run and every rule that looks at a neighbour: trailing white space, a lone dot), so a body
encoded as runs of whole lines is byte for byte the body encoded whole — provided each run
but the last is encoded with the line end that follows it (b2a_qp counts
the CR of a CRLF in a line's length: a 76-octet line gets a soft break before its CRLF but
not at the end of the data). Only the lines that hold a recipient's value are encoded per
message.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from dispatcher.sending.placeholders import Segments

_CRLF = "\r\n"


def _lines(body: str) -> str:
    """CR, LF and CRLF line ends as LF (what :func:`encode` reads)."""
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    return body


def encode(body: str) -> bytes:
    """``body`` as UTF-8 quoted-printable with CRLF line ends."""
    text = _lines(body).replace("\n", _CRLF)
    data = text.encode("utf-8", "replace")
    encoded = binascii.b2a_qp(data, istext=True)
    if b"\n" not in data:
        # b2a_qp takes its line end from the first line; with none, its soft breaks are
        # bare LF, the only LFs in the output.
        encoded = encoded.replace(b"\n", b"\r\n")
    return encoded


@dataclass(frozen=True)
class EncodedPart:
    """A part cut at its placeholders, as runs of whole lines: the lines without a
    placeholder encoded already, the others (:class:`Segments`) encoded when filled.

    :meth:`fill` gives exactly ``encode(segments.fill(values))``."""

    segments: Segments
    runs: tuple[bytes | Segments, ...]

    @classmethod
    def of(cls, segments: Segments) -> EncodedPart:
        # The part's lines, each a list of literal text and (field, escaping) places.
        merged: list[str | tuple[str, str]] = []  # adjacent literals as one
        for part in segments.parts:
            if merged and isinstance(part, str) and isinstance(merged[-1], str):
                merged[-1] += part
            else:
                merged.append(part)
        if any(isinstance(p, str) and p.endswith("\r") for p in merged[:-1]):
            # A CR before a value may pair with an LF after it: where the line ends is
            # known only when filled (templates render LF line ends; this is for the odd one).
            return cls(segments, (segments,))
        lines: list[list[str | tuple[str, str]]] = [[]]
        for part in merged:
            if isinstance(part, tuple):
                lines[-1].append(part)
                continue
            first, *rest = _lines(part).split("\n")
            lines[-1].append(first)
            lines.extend([piece] for piece in rest)
        runs: list[bytes | Segments] = []
        run: list[list[str | tuple[str, str]]] = []
        filled = False  # whether the run being gathered holds a placeholder

        def close() -> None:
            if not run:
                return
            parts: list[str | tuple[str, str]] = []
            for number, line in enumerate(run):
                if number:
                    parts.append("\n")
                parts.extend(line)
            if not last:
                parts.append("\n")  # encoded with the line end that follows it
            if filled:
                runs.append(Segments(tuple(parts)))
            else:
                runs.append(encode("".join(p for p in parts if isinstance(p, str))))
            run.clear()

        last = False
        for line in lines:
            has_place = any(isinstance(p, tuple) for p in line)
            if run and has_place != filled:
                close()
            filled = has_place
            run.append(line)
        last = True
        close()
        return cls(segments, tuple(runs))

    def fill(self, values: dict[str, str]) -> bytes:
        if any("\r" in value for value in values.values()):
            return encode(self.segments.fill(values))  # a CR in a value may join two lines
        return b"".join(
            run if isinstance(run, bytes) else encode(run.fill(values)) for run in self.runs
        )
