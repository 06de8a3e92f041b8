"""The integration backends clean up after themselves: nothing of a test stays in RabbitMQ."""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue
from kombu.exceptions import OperationalError as KombuOperationalError

from tests.support.backends import make_backend
from workers.app import celery_config

pytestmark = pytest.mark.integration


def _exists(connection: Connection, queue: str) -> bool:
    try:
        connection.channel().queue_declare(queue, passive=True)
    except Exception:  # noqa: BLE001 - amqp's NotFound closes the channel: the queue is gone
        return False
    return True


def _exchange_exists(connection: Connection, name: str) -> bool:
    try:
        connection.channel().exchange_declare(name, "direct", passive=True)
    except Exception:  # noqa: BLE001 - as above
        return False
    return True


def test_rabbitmq_backend_removes_both_queues_and_their_exchanges(tmp_path: Path) -> None:
    with make_backend("postgres-rabbitmq", tmp_path / "var") as backend:
        config = celery_config(backend.settings)
        names = [queue.name for queue in config["task_queues"]]
        assert len(names) == 2 and names[1].endswith(".notices")
        with Connection(backend.settings.broker_url, connect_timeout=10) as connection:
            for name in names:  # what a worker declares when it starts
                Queue(name, Exchange(name, "direct"), routing_key=name)(connection).declare()
            assert all(_exists(connection, name) for name in names)
    with Connection(backend.settings.broker_url, connect_timeout=10) as connection:
        try:
            connection.ensure_connection(max_retries=3)
        except KombuOperationalError:
            pytest.fail("RabbitMQ went away during the test")
        left = [n for n in names if _exists(connection, n) or _exchange_exists(connection, n)]
    assert left == []
