"""The one Celery app, configured lazily from the dispatcher settings.

Importing this module connects to nothing and reads no environment; the configuration is
built the first time Celery needs it (``add_defaults`` with a callable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Queue

from dispatcher.db import private_sqlite_file
from dispatcher.settings import Settings, load_settings
from workers.broker import use_fast_sqlalchemy_transport

QUEUE = "dispatch"
# Service notices get their own queue, so a large marketing campaign cannot hold back a
# notice about changed terms; a plain worker consumes both, `-Q <queue>` dedicates one.
NOTICES_SUFFIX = ".notices"


def queue_for(default_queue: str, purpose: str) -> str:
    return default_queue + NOTICES_SUFFIX if purpose == "service_notice" else default_queue


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
        "beat_schedule": {
            "start-due-campaigns": {
                "task": "workers.tasks.start_due_campaigns",
                "schedule": settings.beat_interval_seconds,
            },
            "recover-stalled-campaigns": {
                "task": "workers.tasks.recover_stalled",
                "schedule": max(1.0, min(30.0, settings.claim_lease_seconds / 2)),
            },
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


app = Celery("workers", include=["workers.tasks"])
app.add_defaults(lambda: celery_config(load_settings()))
