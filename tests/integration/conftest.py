from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import BACKENDS, Backend, make_backend, postgres_database, require


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each test that asks for it runs on SQLite/sqla-broker, PostgreSQL/RabbitMQ and
    PostgreSQL/Redis, with a fresh database and queue."""
    with make_backend(request.param, tmp_path / "var") as backend:
        yield backend


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database, once on SQLite and once on PostgreSQL (a new database,
    dropped afterwards): for tests that run the migrations themselves."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'd.db'}"
        return
    require("postgresql")
    with postgres_database() as url:
        yield url
