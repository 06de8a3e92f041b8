"""kombu's SQLAlchemy transport, polling often enough for a mail queue.

The stock transport polls every second and hands its transport options to
``create_engine``, so the interval cannot be set through configuration: with one task per
poll per free worker slot, a campaign of 100 batches would take 100 seconds to be picked up.
"""

from __future__ import annotations

import os
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as _SQLAlchemyChannel
from kombu.transport.sqlalchemy import Transport as _SQLAlchemyTransport
from sqlalchemy.exc import IntegrityError

POLLING_INTERVAL = 0.05


class Channel(_SQLAlchemyChannel):
    def _get_or_create(self, queue: str) -> Any:
        """The queue's row, made if missing. kombu's lock against two makers is one
        process's: a worker's main process and its embedded beat, or two workers, can both
        find the queue missing, and the second insert then stopped that worker's start-up
        (``UNIQUE constraint failed: kombu_queue.name``). The loser takes the winner's row."""
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()


class Transport(_SQLAlchemyTransport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL


def drop_inherited_engines() -> None:
    """In a forked child (the embedded beat, a prefork pool process): forget the broker
    engines its parent cached, without closing the parent's connections.

    kombu keeps one engine per broker URL for the whole process (``Channel._engines``), so a
    child forked after its parent used the broker reused the parent's pooled SQLite
    connections, which must not cross a fork: the embedded beat of a test worker was seen
    failing every publish for minutes with ``file is not a database``. The child makes its
    own engine on first use."""
    for engine, _ in list(_SQLAlchemyChannel._engines.values()):
        engine.dispose(close=False)
    _SQLAlchemyChannel._engines.clear()


_AT_FORK: list[bool] = []


def use_fast_sqlalchemy_transport() -> None:
    """Route ``sqla+…`` broker URLs to :class:`Transport`; forked children make their own
    broker engines (:func:`drop_inherited_engines`)."""
    TRANSPORT_ALIASES["sqla"] = "workers.broker:Transport"
    TRANSPORT_ALIASES["sqlalchemy"] = "workers.broker:Transport"
    if not _AT_FORK:
        os.register_at_fork(after_in_child=drop_inherited_engines)
        _AT_FORK.append(True)
