"""Audiences: which contacts a campaign is for, as a SQL predicate over ``Contact``.

Syntax: terms joined by ``,`` must all hold; inside a term, ``|`` separates alternatives.
A term is ``tag:NAME`` (the contact has that tag), ``KEY=VALUE`` or ``KEY!=VALUE`` (an
attribute imported with the contact; values compare case-insensitively). Empty: everyone.
``KEY!=VALUE`` also selects contacts that have no such attribute. Tags are stored lower-case.
Examples: ``tag:jazz|tag:blues, customer_type=agency`` and ``genre!=rock``.

Case folding of values is the database's ``lower()``: SQLite folds ASCII letters only.
"""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, and_, exists, func, or_, true

from dispatcher.models import Contact, ContactTag

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
ATTRIBUTE_NAME = _KEY  # what an imported column must be called to be usable here


class AudienceError(ValueError):
    """An audience expression that cannot be understood; the message names the term."""


def _term(text: str) -> ColumnElement[bool]:
    term = text.strip()
    if term.startswith("tag:"):
        tag = term[4:].strip().lower()
        if not tag:
            raise AudienceError(f"term {text!r}: a tag name is missing after 'tag:'")
        return exists().where(ContactTag.contact_id == Contact.id, ContactTag.tag == tag)
    for op in ("!=", "="):
        if op in term:
            key, _, value = term.partition(op)
            key, value = key.strip(), value.strip()
            if not _KEY.match(key):
                raise AudienceError(f"term {text!r}: {key!r} is not an attribute name")
            if not value:
                raise AudienceError(f"term {text!r}: a value is missing after {op!r}")
            field = func.lower(Contact.attributes[key].as_string())
            if op == "=":
                return field == value.lower()
            return or_(field.is_(None), field != value.lower())
    raise AudienceError(f"term {text!r} is not understood: use tag:NAME, KEY=VALUE or KEY!=VALUE")


def audience_filter(expression: str | None) -> ColumnElement[bool]:
    """SQL predicate over :class:`Contact` for ``expression`` (None or empty: everyone)."""
    if expression is None or not expression.strip():
        return true()
    clauses = []
    for conjunct in expression.split(","):
        if not conjunct.strip():
            raise AudienceError(f"audience {expression!r} has an empty term")
        alternatives = [_term(a) for a in conjunct.split("|")]
        clauses.append(or_(*alternatives) if len(alternatives) > 1 else alternatives[0])
    return and_(*clauses)


def validate_audience(expression: str | None) -> None:
    """Raise :class:`AudienceError` now rather than when the campaign fans out."""
    audience_filter(expression)


__all__ = ["AudienceError", "audience_filter", "validate_audience"]
