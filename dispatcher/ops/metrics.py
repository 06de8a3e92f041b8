"""Prometheus metrics of the workers, the beat and the recipient app.

Each process counts in memory, or — when ``PROMETHEUS_MULTIPROC_DIR`` is set before this
module is first imported, as ``dispatcher worker``/``beat`` and the systemd units do — in
files under ``var/metrics/<role>/`` (prometheus-client's multiprocess mode, which prefork
workers and gunicorn need). ``dispatcher metrics serve`` merges every role's files and adds
what the database knows (queued messages per campaign), on one port for Prometheus.
Only counters and histograms are kept in files, so no gauge needs a dead process cleaned up.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ROLES = ("worker", "beat", "web")

MESSAGES = Counter(
    "dispatcher_messages",
    "Messages by outcome of their sending attempt (sent, failed, unknown, retried) and purpose",
    ["purpose", "outcome"],
)
SUPPRESSED = Counter(
    "dispatcher_messages_suppressed",
    "Messages the gate kept back at claim time, by purpose and reason",
    ["purpose", "reason"],
)
BATCH_SECONDS = Histogram(
    "dispatcher_batch_seconds",
    "Time to claim, send and record one batch",
    ["purpose"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
SEND_SECONDS = Histogram(
    "dispatcher_send_seconds",
    "Time to hand one message to the transport (SMTP dialogue or maildir write)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SMTP_REPLIES = Counter(
    "dispatcher_smtp_replies",
    "Final SMTP replies to a message, by class (2xx, 4xx, 5xx)",
    ["class"],
)
UNSUBSCRIBES = Counter(
    "dispatcher_unsubscribes",
    "Unsubscribes that took effect, by source (one_click, unsubscribe_page, preferences)",
    ["source"],
)
BEAT_PUBLISHED = Counter(
    "dispatcher_beat_published", "Scheduled tasks the beat published", ["task"]
)
BEAT_FAILED = Counter(
    "dispatcher_beat_publish_failures", "Scheduled tasks the beat could not publish", ["task"]
)


def observe_batch(
    purpose: str,
    *,
    sent: int,
    failed: int,
    unknown: int,
    retried: int,
    suppressed: Mapping[str, int],
    seconds: float,
) -> None:
    """Count one batch's outcomes (called once per batch, after they are recorded)."""
    for outcome, count in (
        ("sent", sent),
        ("failed", failed),
        ("unknown", unknown),
        ("retried", retried),
    ):
        if count:
            MESSAGES.labels(purpose, outcome).inc(count)
    for reason, count in suppressed.items():
        SUPPRESSED.labels(purpose, reason or "unknown").inc(count)
    BATCH_SECONDS.labels(purpose).observe(seconds)


_reply_classes: dict[int, Any] = {}


def smtp_reply(code: int) -> None:
    """Count one final reply by its class. Once per message: the labelled child is looked
    up once per class and process (``labels`` takes a lock and builds a key each time)."""
    klass = code // 100
    child = _reply_classes.get(klass)
    if child is None:
        child = _reply_classes[klass] = SMTP_REPLIES.labels(f"{klass}xx")
    child.inc()


def metrics_dir(settings: Settings, role: str) -> Path:
    return settings.home / "metrics" / role


def multiprocess_env(settings: Settings, role: str) -> dict[str, str]:
    """A fresh ``var/metrics/<role>/<pid>`` (0700) for a process about to start (``dispatcher
    worker`` and ``beat`` exec Celery, which keeps the pid), as environment.

    One folder per process, so several workers under one home keep their own counts; the
    folders of processes that are gone are removed (their counters start again from zero,
    which Prometheus reads as a restart)."""
    if role not in ROLES:
        raise ValueError(f"metrics role must be one of {', '.join(ROLES)}")
    base = metrics_dir(settings, role)
    base.mkdir(parents=True, mode=0o700, exist_ok=True)
    for old in base.iterdir():
        if old.is_dir() and not (old.name.isdigit() and _alive(int(old.name))):
            shutil.rmtree(old, ignore_errors=True)
        elif old.is_file():  # the one-folder-per-role layout of earlier releases
            old.unlink()
    path = base / str(os.getpid())
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    return {MULTIPROC_ENV: str(path)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class _MergedFiles(Collector):
    """Every role's multiprocess files under ``root``, merged into one set of metrics."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def collect(self) -> Iterable[Metric]:
        # var/metrics/<role>/<pid>/*.db, and <role>/*.db of the systemd units' fixed folders.
        files = sorted(glob.glob(str(self.root / "**" / "*.db"), recursive=True))
        return MultiProcessCollector.merge(files, accumulate=True) if files else []


class _Queues(Collector):
    """Queued messages and the age of the oldest, per campaign, read from the database."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        from dispatcher.campaigns.counts import current
        from dispatcher.models import Campaign, Delivery, DeliveryStatus
        from suppression.models import utcnow

        depth = GaugeMetricFamily(
            "dispatcher_queued_messages",
            "Messages waiting to be sent, per campaign",
            labels=["campaign", "purpose"],
        )
        oldest = GaugeMetricFamily(
            "dispatcher_oldest_queued_seconds",
            "Age of the oldest queued message, per campaign",
            labels=["campaign", "purpose"],
        )
        now = utcnow()
        rows = []
        with self.sessions() as session:
            # Counts from the campaigns' counters; the oldest queued row through the
            # (campaign_id, status, id) index. Only unfinished campaigns have queued rows.
            live = dict(
                session.execute(
                    select(Campaign.id, Campaign.purpose).where(
                        Campaign.status.in_(["scheduled", "sending", "paused"])
                    )
                ).all()
            )
            found = current(session, live)
            for campaign_id, purpose in live.items():
                count = found[campaign_id].by_status.get(DeliveryStatus.QUEUED.value, 0)
                if count <= 0:
                    continue
                first = session.scalar(
                    select(Delivery.created_at)
                    .where(
                        Delivery.campaign_id == campaign_id,
                        Delivery.status == DeliveryStatus.QUEUED,
                    )
                    .order_by(Delivery.id)
                    .limit(1)
                )
                rows.append((campaign_id, purpose, count, first))
        for campaign_id, purpose, count, first in rows:
            labels = [str(campaign_id), str(purpose)]
            depth.add_metric(labels, count)
            if first is not None:
                if first.tzinfo is None:
                    first = first.replace(tzinfo=now.tzinfo)
                oldest.add_metric(labels, max(0.0, (now - first).total_seconds()))
        yield depth
        yield oldest


class _Trouble(Collector):
    """Campaigns in trouble, as ``campaign list`` and ``campaign status`` say it: open task
    errors by code, and campaigns still scheduled well after their time."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        from dispatcher.campaigns.health import campaigns_in_trouble
        from dispatcher.models import CampaignTaskError

        errors = GaugeMetricFamily(
            "dispatcher_campaign_task_errors",
            "Tasks of a campaign whose last run failed and has not succeeded since, by code",
            labels=["campaign", "code"],
        )
        trouble = GaugeMetricFamily(
            "dispatcher_campaign_in_trouble",
            "1 for a campaign in trouble (errors, or overdue: scheduled well past its time)",
            labels=["campaign", "kind"],
        )
        with self.sessions() as session:
            rows = session.execute(
                select(CampaignTaskError.campaign_id, CampaignTaskError.code, func.count())
                .where(CampaignTaskError.resolved_at.is_(None))
                .group_by(CampaignTaskError.campaign_id, CampaignTaskError.code)
            ).all()
            troubled = campaigns_in_trouble(session, self.settings)
        for campaign_id, code, count in rows:
            errors.add_metric([str(campaign_id), str(code)], count)
        for campaign_id, kind in troubled.items():
            trouble.add_metric([str(campaign_id), kind], 1)
        yield errors
        yield trouble


class _Feedback(Collector):
    """What came back, from the database: inbound reports by kind and outcome, and the
    bounces and complaints recorded against each campaign's deliveries."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        from dispatcher.models import Delivery, InboundMessage

        reports = GaugeMetricFamily(
            "dispatcher_inbound_reports",
            "Inbound messages recorded, by kind (hard_bounce, complaint, unsubscribe, …) "
            "and outcome (applied, unmatched, duplicate, …)",
            labels=["kind", "outcome"],
        )
        feedback = GaugeMetricFamily(
            "dispatcher_delivery_feedback",
            "Sent messages a bounce or complaint came back about, per campaign and kind",
            labels=["campaign", "kind"],
        )
        with self.sessions() as session:
            by_kind = session.execute(
                select(InboundMessage.kind, InboundMessage.outcome, func.count()).group_by(
                    InboundMessage.kind, InboundMessage.outcome
                )
            ).all()
            by_campaign = session.execute(
                select(Delivery.campaign_id, Delivery.feedback, func.count())
                .where(Delivery.feedback.is_not(None))
                .group_by(Delivery.campaign_id, Delivery.feedback)
            ).all()
        for kind, outcome, count in by_kind:
            reports.add_metric([str(kind), str(outcome)], count)
        for campaign_id, came_back, count in by_campaign:
            feedback.add_metric([str(campaign_id), str(came_back)], count)
        yield reports
        yield feedback


def registry(settings: Settings, sessions: sessionmaker[Session]) -> CollectorRegistry:
    """What ``dispatcher metrics serve`` exposes: every role's files, the queues, trouble."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_MergedFiles(settings.home / "metrics"))
    reg.register(_Queues(sessions))
    reg.register(_Trouble(settings, sessions))
    reg.register(_Feedback(sessions))
    return reg


def serve(settings: Settings, sessions: sessionmaker[Session], host: str, port: int) -> None:
    """Serve ``/metrics`` until interrupted (a small threaded WSGI server)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    app = make_wsgi_app(registry(settings, sessions))
    with make_server(host, port, app, server_class=_Server, handler_class=_Quiet) as server:
        server.serve_forever()


def in_multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))
