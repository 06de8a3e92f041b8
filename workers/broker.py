"""kombu's SQLAlchemy transport, polling often enough for a mail queue.

The stock transport polls every second and hands its transport options to
``create_engine``, so the interval cannot be set through configuration: with one task per
poll per free worker slot, a campaign of 100 batches would take 100 seconds to be picked up.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as _SQLAlchemyTransport

POLLING_INTERVAL = 0.05


class Transport(_SQLAlchemyTransport):
    polling_interval = POLLING_INTERVAL


def use_fast_sqlalchemy_transport() -> None:
    """Route ``sqla+…`` broker URLs to :class:`Transport`."""
    TRANSPORT_ALIASES["sqla"] = "workers.broker:Transport"
    TRANSPORT_ALIASES["sqlalchemy"] = "workers.broker:Transport"
