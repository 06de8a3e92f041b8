"""The processes a campaign needs and staff cannot see: the beat, the workers, the broker.

The beat and each worker write a heartbeat row (``heartbeats``) every few seconds;
:func:`probe_fleet` asks the broker, with a short timeout, whether it answers and which
workers consume which queues (Celery's ``inspect``, where the broker can broadcast; the
workers' heartbeats otherwise).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dispatcher.db import private_sqlite_file
from dispatcher.models import Heartbeat
from dispatcher.settings import Settings
from suppression.models import utcnow
from suppression.sql import insert_for

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "dispatch"
# Service notices get their own queue, so a large marketing campaign cannot hold back a
# notice about changed terms; a plain worker consumes both, `-Q <queue>` dedicates one.
NOTICES_SUFFIX = ".notices"
BEAT = "beat"
WORKER = "worker"
# Brokers whose workers answer Celery's broadcast (ping, inspect); kombu's SQLAlchemy
# transport cannot broadcast between processes, so there the heartbeats tell.
_BROADCAST_SCHEMES = {"amqp", "amqps", "pyamqp", "redis", "rediss"}


def queue_for(default_queue: str, purpose: str) -> str:
    return default_queue + NOTICES_SUFFIX if purpose == "service_notice" else default_queue


def campaign_queue(settings: Settings, purpose: str) -> str:
    """The queue a campaign's batches go to under these settings."""
    return queue_for(str(settings.celery.get("task_default_queue", DEFAULT_QUEUE)), purpose)


def heartbeat_every(settings: Settings) -> float:
    """How often the beat and the workers write their heartbeat (seconds)."""
    return max(settings.beat_interval_seconds, 5.0)


def heartbeat_fresh_for(settings: Settings) -> float:
    """A heartbeat older than this means the process is gone (three missed, and a margin)."""
    return 3 * heartbeat_every(settings) + 5.0


def write_heartbeat(
    session: Session,
    kind: str,
    name: str,
    *,
    detail: str | None = None,
    problem: str | None = None,
) -> None:
    """Upsert this process's heartbeat; ``problem`` (its own last complaint) is kept, with
    its time, until the process reports none."""
    now = utcnow()
    stmt = insert_for(session, Heartbeat).values(
        name=name,
        kind=kind,
        seen_at=now,
        detail=detail,
        problem=problem,
        problem_at=now if problem else None,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "kind": kind,
            "seen_at": now,
            "detail": detail,
            "problem": problem,
            "problem_at": now if problem else None,
        },
    )
    session.execute(stmt)


def forget_heartbeat(session: Session, name: str) -> None:
    """A process that stops cleanly removes its heartbeat."""
    session.execute(delete(Heartbeat).where(Heartbeat.name == name))


def heartbeats(session: Session, kind: str) -> list[Heartbeat]:
    """Heartbeats of one kind, the most recent first."""
    return list(
        session.scalars(
            select(Heartbeat).where(Heartbeat.kind == kind).order_by(Heartbeat.seen_at.desc())
        )
    )


START_DUE_TASK = "workers.tasks.start_due_campaigns"


def start_due_now(settings: Settings, timeout: float = 5.0) -> bool:
    """Ask a worker to start the campaigns that are due now instead of at the beat's next
    tick (up to ``DISPATCHER_BEAT_INTERVAL_SECONDS`` away): "send now" starts at once.

    Only a nudge, sent after the schedule is committed: the beat starts the campaign anyway,
    and a campaign started twice is started once (the fan-out moves it to sending first).
    False, and a line in the log, when the broker did not take it within about
    ``timeout`` seconds (connecting, and one more try)."""
    from celery import Celery

    if settings.broker_url.startswith("sqla+sqlite:///"):  # made before any worker's, private
        private_sqlite_file(Path(settings.broker_url.removeprefix("sqla+sqlite:///")))
    app = Celery("nudge", set_as_current=False)
    app.conf.update(
        {
            "broker_url": settings.broker_url,
            "task_default_queue": DEFAULT_QUEUE,
            "broker_connection_timeout": timeout,
            "broker_connection_retry": False,
            # RabbitMQ acknowledges the message before the publish returns: a connection
            # closed right after it could otherwise lose it. (Redis and the SQL transport
            # answer every write; the SQL one hands its options to create_engine.)
            "broker_transport_options": (
                {"confirm_publish": True}
                if settings.broker_url.split(":", 1)[0] in ("amqp", "amqps", "pyamqp")
                else {}
            ),
            **settings.celery,  # the workers' own queue and routes
        }
    )
    try:
        # Its own connection, closed with the broker's acknowledgement (not cut) on leaving.
        with app.connection_for_write() as connection:
            app.send_task(
                START_DUE_TASK,
                connection=connection,
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0.5, "interval_step": 0},
            )
    except Exception as exc:  # noqa: BLE001 - any failure is the same news: beat will do it
        log.warning("could not ask the workers to start due campaigns now: %s", type(exc).__name__)
        return False
    finally:
        app.close()
    return True


@dataclass(frozen=True)
class Fleet:
    """What the broker said at ``checked_at``.

    ``consumers``: worker name → the queues it consumes, as answered to Celery's inspect;
    None when it could not be asked (broker unreachable, or a broker that cannot broadcast).
    """

    checked_at: datetime
    broker_problem: str | None = None
    consumers: dict[str, tuple[str, ...]] | None = None

    def consuming(self, queue: str) -> list[str] | None:
        if self.consumers is None:
            return None
        return sorted(name for name, queues in self.consumers.items() if queue in queues)


BROKER_UNREACHABLE = (
    "cannot reach the broker: check DISPATCHER_BROKER_URL and that the broker is running"
)


def probe_fleet(settings: Settings, timeout: float = 2.0) -> Fleet:
    """Ask the broker, within about ``timeout`` seconds each, whether it answers and which
    workers consume which queues."""
    from celery import Celery
    from kombu import Connection

    now = utcnow()
    connection = Connection(settings.broker_url, connect_timeout=timeout)
    try:
        try:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is the same news
            log.info("broker probe failed: %s", type(exc).__name__)
            return Fleet(now, broker_problem=BROKER_UNREACHABLE)
        scheme = settings.broker_url.split(":", 1)[0].lower()
        if scheme not in _BROADCAST_SCHEMES:
            return Fleet(now)
        app = Celery("probe", broker=settings.broker_url, set_as_current=False)
        try:
            inspect = app.control.inspect(timeout=timeout, connection=connection)
            answers = inspect.active_queues() or {}
        except Exception as exc:  # noqa: BLE001 - the broker went away while asking
            log.info("worker probe failed: %s", type(exc).__name__)
            return Fleet(now, broker_problem=BROKER_UNREACHABLE)
        finally:
            app.close()
        return Fleet(
            now,
            consumers={
                name: tuple(str(q.get("name")) for q in queues or ())
                for name, queues in answers.items()
            },
        )
    finally:
        connection.release()


def fresh(seen_at: datetime | None, settings: Settings, now: datetime) -> bool:
    return seen_at is not None and now - seen_at <= timedelta(seconds=heartbeat_fresh_for(settings))
