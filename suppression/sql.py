"""Dialect-aware statement helpers shared by the policy core and the dispatcher."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from sqlalchemy import Connection, Table, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

BACKENDS = ("postgresql", "sqlite")

_P = ParamSpec("_P")
_R = TypeVar("_R")


def built_once(build: Callable[_P, _R]) -> Callable[_P, _R]:
    """``build`` (a statement builder) run once per arguments and process, its statement kept
    (``functools.cache``): a statement costs more to build than to run.

    Applied after the ``def`` (``_claim_statement = built_once(_claim_statement)``), never as
    a decorator: mutmut does not mutate a decorated function, and these builders write the
    promise's SQL (README, "Mutation testing"). Under mutmut, tests/conftest.py empties these
    caches before each test, so each mutant's tests build (and :func:`compiled` compiles)
    the mutated statement."""
    return cast(Callable[_P, _R], functools.cache(build))


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


def run(connection: Connection, statement: Any, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The rows of ``statement`` (a Core statement built once per process that returns rows),
    run on ``connection``'s own DBAPI cursor, in its transaction: without SQLAlchemy's work
    per execution (a cache key of the whole statement, an execution context, a result
    object), which costs more than the driver's for the unsubscribe's statements of
    data-modifying CTEs. Typed as through ``connection.execute`` (:func:`compiled`).
    Listeners of ``before_cursor_execute`` and ``after_cursor_execute`` are told (with no
    execution context); a driver's error is raised as SQLAlchemy raises it
    (``OperationalError`` …), a lost connection invalidated."""
    prepared = compiled(statement, connection.dialect)
    bound = prepared.bind(params)
    if not connection.in_transaction():
        connection.begin()  # as ``execute`` would (a session's connection is in one already)
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        events = connection._has_events or connection.engine._has_events
        if events:
            connection.dispatch.before_cursor_execute(
                connection, cursor, prepared.sql, bound, None, False
            )
        cursor.execute(prepared.sql, bound)
        found = cursor.fetchall()
        if events:
            connection.dispatch.after_cursor_execute(
                connection, cursor, prepared.sql, bound, None, False
            )
    except connection.dialect.loaded_dbapi.Error as exc:
        connection._handle_dbapi_exception(exc, prepared.sql, bound, cursor, None)
    finally:
        cursor.close()
    return prepared.rows(found)


def run_one(connection: Connection, statement: Any, params: Mapping[str, Any]) -> tuple[Any, ...]:
    """The one row of ``statement`` (:func:`run`); ``RuntimeError`` when it is not one."""
    found = run(connection, statement, params)
    if len(found) != 1:
        raise RuntimeError(f"expected one row, got {len(found)}")
    return found[0]


@dataclass(frozen=True)
class Compiled:
    """A statement compiled for one backend, to run on a DBAPI cursor (:func:`compiled`)."""

    sql: str
    names: tuple[str, ...]
    positional_order: tuple[str, ...] | None  # a positional driver's parameters, in order
    defaults: dict[str, Any]  # values the statement carries itself
    bind_processors: tuple[tuple[str, Any], ...]
    result_processors: tuple[Any, ...]

    def bind(self, params: Mapping[str, Any]) -> Any:
        """The driver's parameters: each value through its type's bind processing, in the
        driver's form (a dict, or a tuple for a positional driver such as SQLite's)."""
        defaults = self.defaults
        values = {name: params[name] if name in params else defaults[name] for name in self.names}
        for name, process in self.bind_processors:
            values[name] = process(values[name])
        order = self.positional_order
        return values if order is None else tuple(values[name] for name in order)

    def rows(self, found: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """The driver's rows, each column through its type's result processing."""
        processors = self.result_processors
        if not any(processors):
            return [tuple(row) for row in found]
        return [
            tuple(p(v) if p else v for p, v in zip(processors, row, strict=True)) for row in found
        ]


_COMPILED: dict[tuple[int, str], tuple[Any, Compiled]] = {}


def compiled(statement: Any, dialect: Any) -> Compiled:
    """``statement`` compiled for ``dialect``, once per process: its SQL, its parameters'
    bind processing (times, JSON) and its columns' result processing, as
    ``connection.execute`` would apply them. For statements built once and kept (the cache
    holds each one); none whose parameters expand per execution (``IN`` lists)."""
    key = (id(statement), dialect.name)
    found = _COMPILED.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    done = statement.compile(dialect=dialect)
    if "POSTCOMPILE" in done.string or done.escaped_bind_names:
        raise ValueError("a prebuilt statement cannot expand or rename parameters per execution")
    names = tuple(dict.fromkeys(done.bind_names.values()))
    made = Compiled(
        sql=done.string,
        names=names,
        positional_order=tuple(done.positiontup or ()) if dialect.positional else None,
        defaults={
            name: bind.value
            for bind, name in done.bind_names.items()
            if not bind.required and bind.callable is None
        },
        bind_processors=tuple(
            (name, process)
            for name, process in done._bind_processors.items()
            if process is not None and name in names
        ),
        result_processors=tuple(
            column.type._cached_result_processor(dialect, None) for column in done._result_columns
        ),
    )
    # Keyed by identity: the statement is kept with its compiled form, so that its id is
    # never reused for another.
    _COMPILED[key] = (statement, made)
    return made
