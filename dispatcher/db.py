"""Engines and sessions. Nothing connects at import time."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.settings import PROJECT_ROOT, Settings
from suppression.sql import Compiled, compiled, dialect_name

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = PROJECT_ROOT / "migrations"


def private_sqlite_file(path: Path) -> None:
    """Create a SQLite database file mode 0600 (its folder 0700 when we make it) before SQLite
    does, so that it never exists readable by other users; SQLite gives its -wal and -shm
    files the database file's mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """An engine tuned for this project's two backends.

    Its errors never carry a statement's parameters (addresses, IPs, browsers, names):
    a database error that reaches a log shows the SQL only."""
    kwargs.setdefault("hide_parameters", True)
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1].split("?", 1)[0]
        if path and path != ":memory:":
            private_sqlite_file(Path(path))
        engine = create_engine(
            database_url, connect_args={"timeout": 60}, pool_pre_ping=False, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take it over.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE: take the write lock at BEGIN, so two writers queue instead of
            # deadlocking on a read-then-write upgrade. A reader that asked (read_only)
            # begins deferred and reads beside a writer (WAL).
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_engine(database_url, pool_pre_ping=False, **kwargs)
    ping_when_in_doubt(engine)
    return engine


# A pooled PostgreSQL connection idle longer than this is pinged before use.
PING_AFTER_IDLE_SECONDS = 10.0


def ping_when_in_doubt(engine: Engine) -> None:
    """Ping a pooled connection before use only when it may be dead, instead of before every
    use (``pool_pre_ping``: a round trip per request): when it has been idle longer than
    :data:`PING_AFTER_IDLE_SECONDS`, or when its socket has something to read, which an idle
    connection's has when the server ended it (``pg_terminate_backend``, a restart: the
    server says why, then closes). Asking the socket is a system call, not a round trip. A
    failed ping discards the pool's connections and the checkout connects afresh."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_in_doubt(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_from = record.info.get("idle_from")
        if idle_from is None:
            return  # connected for this checkout
        if time.monotonic() - idle_from < PING_AFTER_IDLE_SECONDS and not _readable(
            dbapi_connection
        ):
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise InvalidatePoolError(f"ping failed: {exc}") from exc
        if not alive:
            raise InvalidatePoolError("ping failed")


def _readable(dbapi_connection: Any) -> bool:
    """Whether an idle connection's socket has data or an end of file waiting."""
    try:
        fd = dbapi_connection.fileno()
    except Exception:  # closed: let the ping find out
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


READ_ONLY = "dispatcher_read_only"


@contextmanager
def read_only(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reading only. On SQLite it does not wait for the write lock, so a page
    answers while a long write (a contacts import is one transaction) holds it."""
    with factory() as session:
        session.connection(execution_options={READ_ONLY: True})
        yield session
        session.rollback()


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction commits when the block ends and rolls back on error."""
    with factory() as session, session.begin():
        yield session


class Prebuilt:
    """A SELECT built once per process and compiled once per backend, for the hottest reads
    (the link pages: :func:`page_reads`): run on the pool's DBAPI connection without
    SQLAlchemy's work per execution (a cache key, an execution context, a result object:
    about three times the driver's own CPU for a one-row read), each parameter and column
    through its type's processing (:func:`suppression.sql.compiled`, which the unsubscribe's
    statements run through too), so a row reads as it would through SQLAlchemy.
    ``statement`` stays usable on a session (:func:`rows`)."""

    def __init__(self, statement: Any) -> None:
        self.statement = statement

    def compiled(self, dialect: Any) -> Compiled:
        return compiled(self.statement, dialect)


class PageReads:
    """Runs :class:`Prebuilt` reads on one DBAPI cursor (see :func:`page_reads`)."""

    def __init__(self, cursor: Any, dialect: Any) -> None:
        self.cursor = cursor
        self.dialect = dialect

    def rows(self, read: Prebuilt, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        prepared = read.compiled(self.dialect)
        self.cursor.execute(prepared.sql, prepared.bind(params))
        return prepared.rows(self.cursor.fetchall())


def rows(source: Session | PageReads, read: Prebuilt, params: dict[str, Any]) -> list[Any]:
    """``read``'s rows (indexable by position), on a session (in its transaction, as any
    Core statement) or on a page's DBAPI cursor."""
    if isinstance(source, PageReads):
        return source.rows(read, params)
    if source.new or source.dirty or source.deleted:
        source.flush()
    return list(source.connection().execute(read.statement, params).all())


@contextmanager
def page_reads(engine: Engine) -> Iterator[PageReads]:
    """A link page's reads, on one pooled connection and each statement on its own: on
    PostgreSQL in autocommit (no BEGIN and COMMIT round trips), on SQLite outside a
    transaction (a read does not wait for the write lock). The connection goes back to the
    pool transactional whatever happens, or is discarded when it cannot be; a connection
    the server ended is discarded, as SQLAlchemy would. A driver's error is raised as
    SQLAlchemy raises it (``OperationalError`` …, without parameters), so that a page
    meets the database away the way every other request does."""
    try:
        proxy = engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as exc:
        raise _as_sqlalchemy(engine, exc) from exc
    dbapi = proxy.driver_connection
    postgres = engine.dialect.name == "postgresql"
    try:
        if postgres:
            dbapi.autocommit = True  # type: ignore[union-attr]
        cursor = proxy.cursor()
        try:
            yield PageReads(cursor, engine.dialect)
        finally:
            cursor.close()
    except engine.dialect.loaded_dbapi.Error as exc:
        invalidated = engine.dialect.is_disconnect(exc, proxy, None)
        if invalidated:
            proxy.invalidate(exc)
        raise _as_sqlalchemy(engine, exc, invalidated) from exc
    finally:
        if postgres and proxy.is_valid:
            try:
                dbapi.autocommit = False  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - a connection that cannot is dropped
                proxy.invalidate(exc)
        proxy.close()


def lift_statement_timeout(session: Session) -> None:
    """No statement timeout for the rest of ``session``'s transaction (PostgreSQL; nothing
    to do elsewhere): for a web request that reads a whole list, on connections that bound
    every statement (``dispatcher.web.STATEMENT_TIMEOUT_MS``)."""
    if dialect_name(session) == "postgresql":
        session.execute(text("SET LOCAL statement_timeout = 0"))


def _as_sqlalchemy(engine: Engine, exc: Exception, invalidated: bool = False) -> Exception:
    """The driver's ``exc`` as the SQLAlchemy exception ``connection.execute`` would raise."""
    return DBAPIError.instance(
        None,
        None,
        exc,
        engine.dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=invalidated,
        dialect=engine.dialect,
    )


def alembic_config(database_url: str) -> Config:
    # Imported here: a worker never migrates, and Alembic (with Mako and Pygments) is ~11 MB
    # of every worker process's memory.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Create or migrate the schema with Alembic."""
    from alembic import command

    command.upgrade(alembic_config(settings.database_url), revision)
