"""Dialect-aware statement helpers shared by the policy core and the dispatcher."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

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
