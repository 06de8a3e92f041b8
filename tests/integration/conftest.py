from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import BACKENDS, Backend, make_backend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each test that asks for it runs on SQLite/sqla-broker, PostgreSQL/RabbitMQ and
    PostgreSQL/Redis, with a fresh database and queue."""
    with make_backend(request.param, tmp_path / "var") as backend:
        yield backend
