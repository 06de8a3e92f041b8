"""Once-per-campaign rendering: parts rendered with placeholders, filled per recipient.

:mod:`dispatcher.sending.rendering` renders a campaign's parts once with a random placeholder for
each recipient field and inlines the CSS once; :func:`cut` splits each result at the
placeholders, and :meth:`Segments.fill` joins it again with one recipient's values, escaped
as lxml (behind premailer) would have written them in that place. Placeholders are
alphanumeric so premailer leaves them alone, even inside ``href`` attributes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ESCAPE_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
ESCAPE_ATTR = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})

# Values whose escaping the sample recipients do not prove send that recipient through the
# full render: lxml rewrites a URL with a space, a quote or a non-ASCII character, and CR,
# NUL or other control characters in a name.
_UNPROVEN_URL = re.compile(r"[^\x21\x23-\x7e]")
_UNPROVEN_NAME = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def proven(names: Sequence[str | None], urls: Sequence[str]) -> bool:
    """Whether these values may be filled in by the fast path."""
    return not (
        any(_UNPROVEN_NAME.search(name or "") for name in names)
        or any(_UNPROVEN_URL.search(url) for url in urls)
    )


class Placeholders:
    """A fresh, unguessable placeholder for each field, per campaign."""

    def __init__(self, fields: Sequence[str]) -> None:
        nonce = secrets.token_hex(5)
        self.fields = tuple(fields)
        self.values = {f: f"zq{nonce}x{i}q" for i, f in enumerate(self.fields)}
        self.pattern = re.compile(rf"zq{nonce}x(\d+)q")

    def cut(self, rendered: str, *, html: bool) -> Segments:
        """Split ``rendered`` at the placeholders, noting how each place escapes a value."""
        parts: list[str | tuple[str, str]] = []
        position = 0
        for match in self.pattern.finditer(rendered):
            parts.append(rendered[position : match.start()])
            escaping = "raw"
            if html:
                before = rendered[: match.start()]
                escaping = "attr" if before.rfind("<") > before.rfind(">") else "text"
            parts.append((self.fields[int(match.group(1))], escaping))
            position = match.end()
        parts.append(rendered[position:])
        return Segments(tuple(p for p in parts if p != ""))


@dataclass(frozen=True)
class Segments:
    """A rendered part cut at the placeholders: literals and (field, escaping) pairs."""

    parts: tuple[str | tuple[str, str], ...]
    # fill's plan, made once (a part is filled for every message): the literals in place
    # and, for each place, its index, field and escaping.
    _literals: list[str] = field(init=False, repr=False, compare=False)
    _places: tuple[tuple[int, str, Callable[[str], str] | None], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        literals: list[str] = []
        places: list[tuple[int, str, Callable[[str], str] | None]] = []
        for index, part in enumerate(self.parts):
            if isinstance(part, str):
                literals.append(part)
                continue
            field_, escaping = part
            literals.append("")
            places.append((index, field_, _ESCAPES.get(escaping)))
        object.__setattr__(self, "_literals", literals)
        object.__setattr__(self, "_places", tuple(places))

    def fill(self, values: dict[str, str]) -> str:
        out = self._literals.copy()
        for index, field_, escape in self._places:
            value = values[field_]
            out[index] = value if escape is None else escape(value)
        return "".join(out)


def escape_text(value: str) -> str:
    """``value.translate(ESCAPE_TEXT)``: each replace is one C scan, and a value with
    nothing to escape (most) comes back as it is; translate looks every character up."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_attr(value: str) -> str:
    """``value.translate(ESCAPE_ATTR)`` (see :func:`escape_text`)."""
    return escape_text(value).replace('"', "&quot;")


_ESCAPES: dict[str, Callable[[str], str]] = {"attr": escape_attr, "text": escape_text}
