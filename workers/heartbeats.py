"""Heartbeats of the beat and of each worker, so ``campaign status`` can say which is missing.

Each process writes its row from a small daemon thread every few seconds
(``dispatcher.campaigns.fleet.heartbeat_every``), so a beat blocked on an unreachable broker
still shows as alive, and the probe of the broker says what is wrong. The beat also records
its own last failure to publish a scheduled task.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from celery.beat import PersistentScheduler
from celery.signals import beat_init, worker_ready, worker_shutdown

from dispatcher.campaigns.fleet import (
    BEAT,
    WORKER,
    forget_heartbeat,
    heartbeat_every,
    write_heartbeat,
)
from dispatcher.campaigns.problems import explain
from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.ops import metrics
from dispatcher.settings import load_settings

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Writes ``kind``/``name``'s heartbeat until stopped; a database that does not answer
    is logged (once until it answers again), never fatal."""

    def __init__(self, kind: str, name: str, detail: str, problem: Callable[[], str | None]):
        super().__init__(name=f"{kind}-heartbeat", daemon=True)
        self.kind, self.beat_name, self.detail, self.problem = kind, name, detail, problem
        self._stopped = threading.Event()
        settings = load_settings()
        self.every = heartbeat_every(settings)
        self.engine = make_engine(settings.database_url)
        self.sessions = make_sessionmaker(self.engine)

    def beat_once(self) -> bool:
        try:
            with session_scope(self.sessions) as session:
                write_heartbeat(
                    session, self.kind, self.beat_name, detail=self.detail, problem=self.problem()
                )
        except Exception as exc:  # noqa: BLE001 - a heartbeat must never stop its process
            log.warning("%s heartbeat not written (%s)", self.kind, type(exc).__name__)
            return False
        return True

    def run(self) -> None:
        while True:
            self.beat_once()
            if self._stopped.wait(self.every):
                return

    def stop(self, *, forget: bool) -> None:
        self._stopped.set()
        self.join(5)
        if forget:
            try:
                with session_scope(self.sessions) as session:
                    forget_heartbeat(session, self.beat_name)
            except Exception as exc:  # noqa: BLE001 - the row then just goes stale
                log.warning("%s heartbeat not removed (%s)", self.kind, type(exc).__name__)
        self.engine.dispose()


# --- the beat ---------------------------------------------------------------------------------

_publish_problem: str | None = None


class HeartbeatScheduler(PersistentScheduler):
    """Celery's own scheduler, remembering why its last publish failed (for the heartbeat)."""

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kw: Any) -> Any:
        global _publish_problem
        task = str(getattr(entry, "task", "?"))
        try:
            result = super().apply_async(entry, producer, advance, **kw)
        except Exception as exc:
            _publish_problem = "the beat could not queue its work: " + explain(exc, "beat").message
            metrics.BEAT_FAILED.labels(task).inc()
            raise
        _publish_problem = None
        metrics.BEAT_PUBLISHED.labels(task).inc()
        return result


@beat_init.connect
def _start_beat_heartbeat(**_: object) -> None:
    name = f"beat@{socket.gethostname()}"
    Heartbeat(BEAT, name, f"pid {os.getpid()}", lambda: _publish_problem).start()


# --- workers ----------------------------------------------------------------------------------

_worker_heartbeat: Heartbeat | None = None


@worker_ready.connect
def _start_worker_heartbeat(sender: Any = None, **_: object) -> None:
    global _worker_heartbeat
    queues = ",".join(sorted(sender.app.amqp.queues.consume_from)) if sender else ""
    name = getattr(sender, "hostname", None) or f"worker@{socket.gethostname()}:{os.getpid()}"
    _worker_heartbeat = Heartbeat(WORKER, name, queues, lambda: None)
    _worker_heartbeat.start()


@worker_shutdown.connect
def _stop_worker_heartbeat(**_: object) -> None:
    global _worker_heartbeat
    if _worker_heartbeat is not None:
        _worker_heartbeat.stop(forget=True)
        _worker_heartbeat = None
