"""Database and broker pairs the integration suite runs on, each made fresh for a test.

SQLite with kombu's SQLAlchemy transport needs nothing; PostgreSQL, RabbitMQ and Redis are the
machine's own services. When one is down the test is skipped on a developer's machine and
FAILS under CI=true, so a green CI always means the services were really used.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dispatcher.db import upgrade
from dispatcher.settings import Settings
from tests.conftest import TEST_KEYS, settings_for
from tests.support.pg import temporary_database

PG_ADMIN_URL = os.environ.get(
    "DISPATCHER_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SERVICES = {
    "postgresql": ("127.0.0.1", 5432),
    "rabbitmq": ("127.0.0.1", 5672),
    "redis": ("127.0.0.1", 6379),
}

BACKENDS = ("sqlite", "postgres-rabbitmq", "postgres-redis")


def service_up(name: str) -> bool:
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require(*names: str) -> None:
    missing = [n for n in names if not service_up(n)]
    if not missing:
        return
    message = f"service(s) not reachable on 127.0.0.1: {', '.join(missing)}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: integration tests must not be skipped)")
    pytest.skip(message)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; dropped afterwards."""
    with temporary_database(PG_ADMIN_URL, "dispatcher_test") as url:
        yield url


@dataclass
class Backend:
    name: str
    home: Path
    overrides: dict[str, str]
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        self.settings = settings_for(self.home, **self.overrides)

    def env(self, **more: str) -> dict[str, str]:
        """The environment a worker process needs to use this backend."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
        env.update(
            {
                "DISPATCHER_HOME": str(self.home),
                "DISPATCHER_SECRET_KEYS": TEST_KEYS,
                "DISPATCHER_BASE_URL": self.settings.base_url,
                "DISPATCHER_BEAT_INTERVAL_SECONDS": "0.5",
            }
        )
        env.update({f"DISPATCHER_{k.upper()}": v for k, v in self.overrides.items()})
        env.update({f"DISPATCHER_{k.upper()}": v for k, v in more.items()})
        return env


@contextmanager
def make_backend(name: str, home: Path) -> Iterator[Backend]:
    """A migrated database and an unused queue on the named backend pair."""
    home.mkdir(parents=True, exist_ok=True)
    queue = f"dispatch-test-{uuid.uuid4().hex[:8]}"
    if name == "sqlite":
        backend = Backend(name, home, {"celery_task_default_queue": queue})
        upgrade(backend.settings)
        yield backend
        return
    broker = name.split("-", 1)[1]
    require("postgresql", "rabbitmq" if broker == "rabbitmq" else "redis")
    broker_url = (
        "amqp://guest:guest@127.0.0.1:5672//"
        if broker == "rabbitmq"
        else "redis://127.0.0.1:6379/0"
    )
    with postgres_database() as database_url:
        backend = Backend(
            name,
            home,
            {
                "database_url": database_url,
                "broker_url": broker_url,
                "celery_task_default_queue": queue,
            },
        )
        upgrade(backend.settings)
        try:
            yield backend
        finally:
            _delete_queue(broker_url, queue)


def _delete_queue(broker_url: str, queue: str) -> None:
    """Remove the test's queues (the campaign queue and its ``.notices`` twin, which every
    worker declares) and, on RabbitMQ, the exchanges Celery declared under the same names."""
    from kombu import Connection

    from workers.app import NOTICES_SUFFIX

    operations = [("queue_delete", name) for name in (queue, queue + NOTICES_SUFFIX)]
    if broker_url.startswith("amqp"):
        operations += [("exchange_delete", name) for name in (queue, queue + NOTICES_SUFFIX)]
    try:
        with Connection(broker_url, connect_timeout=5) as conn:
            for operation, name in operations:
                with contextlib.suppress(Exception):  # already gone: nothing to clean
                    getattr(conn.channel(), operation)(name)
    except Exception:  # noqa: BLE001 - cleanup only; a leftover empty queue harms nothing
        pass
