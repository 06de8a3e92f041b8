"""Failures show up where staff look (issue 15): each scenario reproduced for real, with
real worker and beat processes, and read back from ``campaign status --json``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner

from dispatcher.campaigns.fanout import fan_out
from dispatcher.campaigns.fleet import campaign_queue
from dispatcher.campaigns.services import create_campaign, schedule_campaign
from dispatcher.cli import main
from dispatcher.db import make_engine, make_sessionmaker, session_scope
from suppression.models import utcnow
from tests.factories import make_contact
from tests.support.backends import Backend
from tests.support.smtp_sink import SmtpSink, self_signed_certificate
from workers.process import WorkerProcess, wait_until

ADDRESSES = [f"fan{i}@example.com" for i in range(5)]


def campaign_due(backend: Backend, *, late: bool = True) -> int:
    """Contacts, and a campaign scheduled an hour ago (late) or now."""
    sessions = make_sessionmaker(make_engine(backend.settings.database_url))
    with session_scope(sessions) as session:
        for address in ADDRESSES:
            make_contact(session, address, first_name="Fan")
        campaign = create_campaign(
            session, backend.settings, name="late", subject="new tracks", template="new-releases"
        )
        at = utcnow() - timedelta(hours=1) if late else None
        schedule_campaign(session, backend.settings, campaign.id, at=at)
        return campaign.id


def cli(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def status(env: dict[str, str], campaign_id: int) -> dict[str, Any]:
    output = cli(env, "campaign", "status", str(campaign_id), "--json", "--probe-timeout", "3")
    return json.loads(output)


def problems(report: dict[str, Any]) -> dict[str, str]:
    return {p["code"]: p["message"] for p in report["health"]["problems"]}


@contextmanager
def beat_process(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A workers beat`` as a child process; stopped (SIGTERM, then SIGKILL)."""
    schedule = Path(env["DISPATCHER_HOME"]) / "beat-schedule"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "beat", f"--schedule={schedule}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the probe is closed


@pytest.mark.parametrize("backend", ["sqlite", "postgres-rabbitmq"], indirect=True)
def test_a_worker_without_beat_is_named_as_the_cause_then_a_beat_starts_it(
    backend: Backend, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    env = backend.env(mail_url=smtp_sink.url)
    campaign_id = campaign_due(backend)
    with WorkerProcess(env, tmp_path / "worker.log", beat=False) as worker:
        # The worker writes its first heartbeat from a thread it starts once ready: on SQLite,
        # where heartbeats are how workers are seen, wait for it before asking.
        wait_until(
            lambda: "no_worker" not in problems(status(env, campaign_id)),
            30,
            what="the worker's heartbeat",
        )
        report = status(env, campaign_id)
        assert report["status"] == "scheduled"
        found = problems(report)
        assert set(found) == {"overdue", "no_beat"}, found
        assert "likely cause: no beat is running" in found["overdue"]
        assert found["no_beat"].startswith("no beat has ever been seen")
        assert "dispatcher beat" in found["no_beat"]
        workers = report["health"]["workers"]
        expected = "celery inspect" if backend.name != "sqlite" else "heartbeats"
        assert workers["checked_by"] == expected
        assert worker.name.split("@")[0] in " ".join(workers["consuming"])

        # `campaign list` marks it.
        listing = cli(env, "campaign", "list")
        assert f"{campaign_id}  scheduled  ! overdue" in listing

        with beat_process(env, tmp_path / "beat.log"):
            wait_until(
                lambda: status(env, campaign_id)["status"] == "done", 120, what="campaign done"
            )
            smtp_sink.wait_for_count(len(ADDRESSES), timeout=60)
            report = status(env, campaign_id)
            assert report["health"]["problems"] == []
            assert report["health"]["beat"]["recent"] is True


def test_broker_down_is_named_while_the_beat_runs(backend_sqlite: Backend, tmp_path: Path) -> None:
    backend = backend_sqlite
    broker = f"amqp://guest:guest@127.0.0.1:{closed_port()}//"
    env = backend.env(broker_url=broker)
    campaign_id = campaign_due(backend)
    sessions = make_sessionmaker(make_engine(backend.settings.database_url))
    with beat_process(env, tmp_path / "beat.log"):
        from dispatcher.campaigns.fleet import BEAT, heartbeats

        def beat_seen() -> bool:
            with session_scope(sessions) as session:
                return bool(heartbeats(session, BEAT))

        wait_until(beat_seen, 120, what="beat heartbeat")
        report = status(env, campaign_id)
    found = problems(report)
    assert report["status"] == "scheduled"
    assert "no_beat" not in found  # the beat runs: it is not the cause
    assert found["broker_unreachable"] == (
        "cannot reach the broker: check DISPATCHER_BROKER_URL and that the broker is running"
    )
    assert "likely cause: the broker cannot be reached" in found["overdue"]
    assert report["health"]["broker"]["reachable"] is False


@pytest.mark.parametrize("backend", ["sqlite", "postgres-redis"], indirect=True)
def test_queued_batches_with_no_worker_consuming_say_so(
    backend: Backend, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    env = backend.env(mail_url=smtp_sink.url)
    campaign_id = campaign_due(backend, late=False)
    # The fan-out ran (rows queued, batches on the broker), then every worker went away.
    sessions = make_sessionmaker(make_engine(backend.settings.database_url))
    batches = list(fan_out(sessions, campaign_id, batch_size=2))
    queue = campaign_queue(backend.settings, "marketing")
    publisher = Celery("test", broker=backend.settings.broker_url, set_as_current=False)
    for first_id, last_id in batches:
        publisher.send_task(
            "workers.tasks.send_batch", (campaign_id, first_id, last_id), queue=queue
        )
    publisher.close()

    report = status(env, campaign_id)
    assert report["status"] == "sending"
    found = problems(report)
    assert found == {
        "no_worker": (
            f"{len(ADDRESSES)} messages are queued and no worker consumes queue {queue!r}: "
            f"start `dispatcher worker` (one that consumes {queue!r})"
        )
    }

    with WorkerProcess(env, tmp_path / "worker.log", beat=False):
        smtp_sink.wait_for_count(len(ADDRESSES), timeout=120)
        wait_until(lambda: status(env, campaign_id)["status"] == "done", 120, what="done")
        assert status(env, campaign_id)["health"]["problems"] == []


def test_relay_refusing_login_is_recorded_on_the_campaign(
    backend_sqlite: Backend, tmp_path: Path
) -> None:
    backend = backend_sqlite
    certificate = self_signed_certificate(tmp_path)
    sink = SmtpSink(tls=certificate, credentials={"dispatcher": "the-right-password"}).start()
    try:
        mail_url = (
            f"smtp://dispatcher:a-wrong-password@{sink.host}:{sink.port}"
            f"?starttls=true&cafile={certificate[0]}"
        )
        env = backend.env(mail_url=mail_url)
        campaign_id = campaign_due(backend, late=False)
        with WorkerProcess(env, tmp_path / "worker.log", beat=True):

            def login_refused() -> bool:
                return "smtp_login_refused" in problems(status(env, campaign_id))

            wait_until(login_refused, 120, interval=1, what="login refusal recorded")
            report = status(env, campaign_id)
            listing = cli(env, "campaign", "list")
            text = cli(env, "campaign", "status", str(campaign_id))
        assert sink.logins and not sink.received()
    finally:
        sink.stop()
    (problem,) = [p for p in report["health"]["problems"] if p["code"] == "smtp_login_refused"]
    assert problem["message"] == (
        "the SMTP relay refused our login: check the user and password in DISPATCHER_MAIL_URL"
    )
    assert problem["tasks"] >= 1 and problem["last_at"]
    assert f"{campaign_id}  sending    ! errors" in listing
    assert "! the SMTP relay refused our login" in text
    dumped = json.dumps(report) + text
    assert "a-wrong-password" not in dumped
    assert not any(address in dumped for address in ADDRESSES)


@pytest.fixture
def backend_sqlite(tmp_path: Path) -> Iterator[Backend]:
    from tests.support.backends import make_backend

    with make_backend("sqlite", tmp_path / "var") as made:
        yield made
