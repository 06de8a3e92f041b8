"""Dialect-aware statement helpers shared by the policy core and the dispatcher."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

BACKENDS = ("postgresql", "sqlite")


def dialect_name(session: Session) -> str:
    """``postgresql`` or ``sqlite``: the key under which prebuilt statements are cached."""
    name = session.get_bind().dialect.name
    if name not in BACKENDS:
        raise RuntimeError(f"unsupported database backend {name!r}: use SQLite or PostgreSQL")
    return name


def insert_on(dialect: str, table: Table | Any) -> Any:
    """An INSERT that knows ``ON CONFLICT`` for ``dialect`` (``postgresql`` or ``sqlite``)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database backend {dialect!r}: use SQLite or PostgreSQL")


def insert_for(session: Session, table: Table | Any) -> Any:
    """An INSERT that knows ``ON CONFLICT`` for the session's backend (SQLite or PostgreSQL)."""
    return insert_on(session.get_bind().dialect.name, table)


def core(session: Session) -> Connection:
    """The session's connection, to run a prebuilt Core statement without the ORM's
    per-statement work; what the session holds unflushed is flushed first, as an ORM
    statement would."""
    if session.new or session.dirty or session.deleted:
        session.flush()
    return session.connection()


def inline_constants(statement: Any) -> Any:
    """``statement`` with the constants its code wrote (strings and integers: ``'opted_in'``,
    ``'candidate'``, ``0``, the reasons of an ``IN`` list …) written into its SQL instead of
    bound on every execution; the parameters its callers bind stay parameters.

    For statements built once per process and run on hot paths: each bound value costs
    conversions on every call, and psycopg keeps its parsed form of a statement only while
    the SQL is under 4 KB and 50 parameters (the consent rule's statement is over both with
    its constants bound). Strings, integers and booleans render alike on both backends
    (SQLite knows TRUE and FALSE since 3.23)."""

    def constant(element: Any) -> Any:
        if not isinstance(element, BindParameter) or element.callable is not None:
            return None
        if element.required or element.value is None:
            return None
        if element.expanding:
            values = element.value
            if isinstance(values, list | tuple) and values and all(map(_plain, values)):
                return literal_column("(" + ", ".join(map(_sql_literal, values)) + ")")
            return None
        if _plain(element.value):
            return literal_column(_sql_literal(element.value), element.type)
        return None

    return visitors.replacement_traverse(statement, {}, constant)  # type: ignore[call-overload]


def _plain(value: Any) -> bool:
    return isinstance(value, str | int)


def _sql_literal(value: str | int) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + str.__str__(value).replace("'", "''") + "'"
    return str(int(value))
