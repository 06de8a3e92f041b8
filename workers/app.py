"""The one Celery app, configured lazily from the dispatcher settings.

Importing this module connects to nothing and reads no environment; the configuration is
built the first time Celery needs it (``add_defaults`` with a callable).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Queue

from dispatcher.campaigns.fleet import DEFAULT_QUEUE, NOTICES_SUFFIX, queue_for
from dispatcher.db import private_sqlite_file
from dispatcher.settings import Settings, SettingsError, load_settings
from workers.broker import use_fast_sqlalchemy_transport

QUEUE = DEFAULT_QUEUE
__all__ = ["NOTICES_SUFFIX", "QUEUE", "app", "celery_config", "queue_for"]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings chosen for a mail queue (README, "Celery settings", says why)."""
    transport_options: dict[str, Any] = {}
    if settings.broker_url.startswith("sqla+"):
        use_fast_sqlalchemy_transport()
        if settings.broker_url.startswith("sqla+sqlite:///"):
            private_sqlite_file(Path(settings.broker_url.removeprefix("sqla+sqlite:///")))
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacknowledged task after this; it must exceed the longest
        # batch, or a slow batch is handed to a second worker while the first still sends.
        transport_options["visibility_timeout"] = 3600
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options,
        "task_default_queue": QUEUE,
        "task_ignore_result": True,
        "result_backend": None,
        # A batch is acknowledged only after it finished; a worker lost mid-batch gives the
        # task back to the queue, and our claim tokens keep the redelivery from sending twice.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One batch reserved at a time per process: a dying worker holds back little.
        "worker_prefetch_multiplier": 1,
        # After a broker reconnect Celery lowers the prefetch count and restores it on each
        # ack; with RabbitMQ's per-consumer QoS the restore never reaches the new consumer
        # and the worker stalls (celery/celery#9512). Our prefetch is 1 per process anyway.
        "worker_enable_prefetch_count_reduction": False,
        "task_time_limit": 900,
        "task_soft_time_limit": 840,
        "worker_hijack_root_logger": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        # The beat writes its heartbeat, so `campaign status` can tell when none runs.
        "beat_scheduler": "workers.heartbeats:HeartbeatScheduler",
        "beat_schedule": {
            "start-due-campaigns": {
                "task": "workers.tasks.start_due_campaigns",
                "schedule": settings.beat_interval_seconds,
            },
            "refill-batch-windows": {
                "task": "workers.tasks.refill_windows",
                "schedule": settings.beat_interval_seconds,
            },
            "recover-stalled-campaigns": {
                "task": "workers.tasks.recover_stalled",
                "schedule": max(1.0, min(30.0, settings.claim_lease_seconds / 2)),
            },
            "seal-audit-events": {"task": "workers.tasks.seal_audit", "schedule": 60.0},
            "fold-campaign-counts": {"task": "workers.tasks.fold_counts", "schedule": 60.0},
            "apply-retention": {"task": "workers.tasks.apply_retention", "schedule": 3600.0},
            "prune-signups": {"task": "workers.tasks.prune_signups", "schedule": 3600.0},
            **(
                {
                    "read-inbound-mailboxes": {
                        "task": "workers.tasks.read_inbound_mailboxes",
                        "schedule": max(1.0, settings.inbound_poll_seconds),
                    }
                }
                if settings.inbound_maildir or settings.inbound_imap_url
                else {}
            ),
        },
    }
    config.update(settings.celery)
    default = config["task_default_queue"]
    config.setdefault(
        "task_queues",
        [
            Queue(default, routing_key=default),
            Queue(default + NOTICES_SUFFIX, routing_key=default + NOTICES_SUFFIX),
        ],
    )
    return config


def _configuration() -> dict[str, Any]:
    """Settings that cannot work stop ``celery -A workers …`` with one line, as they stop
    ``dispatcher worker``, instead of a traceback and a worker that fails every task."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"Error: configuration: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    return celery_config(settings)


app = Celery("workers", include=["workers.tasks", "workers.heartbeats"])
app.add_defaults(_configuration)
