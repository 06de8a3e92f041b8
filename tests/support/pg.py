"""A throw-away PostgreSQL database (tests and the benchmark use it; no pytest here)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, text


@contextmanager
def temporary_database(admin_url: str, prefix: str) -> Iterator[str]:
    """Create ``<prefix>_<random>`` next to ``admin_url``'s database; yield its URL; drop it
    afterwards, even with connections still open."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wait_until_blocked(
    engine: Engine, pid: int, waiting: Future[Any], what: str, timeout: float = 60.0
) -> None:
    """Until a session waits for a lock that backend ``pid`` holds; ``waiting`` (the work
    expected to block) must not end first. AssertionError naming ``what`` after ``timeout``."""
    blocked = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
    deadline = time.monotonic() + timeout
    with engine.connect() as watch:
        while not watch.scalar(blocked, {"pid": pid}):
            watch.rollback()
            assert not waiting.done(), waiting.result()
            assert time.monotonic() < deadline, what
