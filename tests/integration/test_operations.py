"""Metrics and logs of a real campaign: `dispatcher worker` (prefork, two processes, its
embedded beat), the SMTP sink, then `dispatcher metrics serve` scraped over HTTP and the
worker's JSON log parsed; the counts must be the rows'."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.models import Delivery
from dispatcher.ops.metrics import MULTIPROC_ENV
from dispatcher.settings import Settings
from suppression.tokens import LinkPurpose, TokenSigner
from tests.conftest import TEST_KEYS
from tests.factories import make_contact
from tests.integration.test_campaign_end_to_end import ELIGIBLE, populate, run_campaign
from tests.integration.test_web_servers import one_click, running
from tests.support.backends import Backend
from tests.support.web_server import free_port
from workers.process import WorkerProcess, wait_until

BIN = Path(sys.executable).parent
REFUSED = "chloe@example.net"


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_until(port: int, holds: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``holds`` is true of the samples (the server may not listen yet)."""
    found: Samples = {}

    def scraped() -> bool:
        nonlocal found
        try:
            found = scrape(port)
        except OSError:
            return False  # not listening yet
        return holds(found)

    wait_until(scraped, 60, interval=0.5, what=what)
    return found


def rows(backend: Backend, campaign_id: int) -> dict[tuple[str, str | None], int]:
    sessions = make_sessionmaker(make_engine(backend.settings.database_url))
    with session_scope(sessions) as session:
        found = session.execute(
            select(Delivery.status, Delivery.skip_reason, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.status, Delivery.skip_reason)
        ).all()
    return {(status, reason): count for status, reason, count in found}


def test_metrics_and_json_logs_of_a_real_campaign(
    backend: Backend, smtp_sink, tmp_path: Path
) -> None:
    populate(backend)
    smtp_sink.reject[REFUSED] = "550 5.1.1 no such user"
    env = backend.env(mail_url=smtp_sink.url, log_format="json")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    worker = WorkerProcess(env, tmp_path / "worker.log", beat=False)
    # Through our own command, which sets up the metrics folder for prefork.
    worker.argv = [
        str(BIN / "dispatcher"),
        "worker",
        "--pool=prefork",
        "--concurrency=2",
        "--beat",
        "--loglevel=info",
        f"--hostname={worker.name}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    port = free_port()
    with worker:
        campaign_id = run_campaign(backend, "metrics")
        server = subprocess.Popen(
            [str(BIN / "dispatcher"), "metrics", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            outcome = rows(backend, campaign_id)
            sent = outcome[("sent", None)]
            failed = outcome[("failed", "hard_bounce")]
            suppressed = {r: n for (s, r), n in outcome.items() if s == "suppressed"}
            assert sent == len(ELIGIBLE) - 1 and failed == 1 and len(suppressed) >= 5
            assert set(outcome) - {("sent", None), ("failed", "hard_bounce")} == {
                ("suppressed", r) for r in suppressed
            }

            found: Samples = {}

            def marketing(name: str, **labels: str) -> float:
                key = frozenset({"purpose": "marketing", **labels}.items())
                return found.get((name, key), 0.0)

            expected = {
                ("dispatcher_messages_total", "sent"): sent,
                ("dispatcher_messages_total", "failed"): failed,
                **{("dispatcher_messages_suppressed_total", r): n for r, n in suppressed.items()},
            }

            def counted(samples: Samples) -> dict[tuple[str, str], float]:
                nonlocal found
                found = samples
                return {
                    (name, value): marketing(
                        name,
                        **({"outcome": value} if "suppressed" not in name else {"reason": value}),
                    )
                    for name, value in expected
                }

            # The worker counts a batch just after recording it: wait for the last one.
            try:
                scrape_until(port, lambda s: counted(s) == expected, "metrics equal to the rows")
            finally:
                print(json.dumps({f"{k[0]}:{k[1]}": v for k, v in counted(found).items()}))
            assert counted(found) == expected
            assert marketing("dispatcher_messages_total", outcome="unknown") == 0
            replies = {
                c: found.get(("dispatcher_smtp_replies_total", frozenset({("class", c)})), 0)
                for c in ("2xx", "4xx", "5xx")
            }
            assert replies == {"2xx": sent, "4xx": 0, "5xx": failed}
            sends = found[("dispatcher_send_seconds_count", frozenset())]
            assert sends == sent + failed
            assert marketing("dispatcher_batch_seconds_count") >= 1
            beat = (
                "dispatcher_beat_published_total",
                frozenset({("task", "workers.tasks.start_due_campaigns")}),
            )
            assert found.get(beat, 0) >= 1
        finally:
            server.terminate()
            server.wait(30)

    lines = (tmp_path / "worker.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    batches = [r for r in records if r["logger"] == "dispatcher.sending.batch"]
    assert batches, "the worker logged no batch"
    for record in batches:
        assert record["campaign_id"] == campaign_id
        first, last = record["batch"].split("-")
        assert record["message"].startswith(f"campaign {campaign_id} batch {first}-{last}:")
        assert record["task_id"]
    # Celery's banner is printed, not logged; every logged line is JSON, none in Celery's
    # own format ("[2026-12-01 01:18:17,004: INFO/MainProcess] …").
    assert len(records) > len(batches)
    assert [line for line in lines if re.match(r"\[\d{4}-\d\d-\d\d ", line)] == []
    trace = [
        r for r in records if r["logger"] == "celery.app.trace" and "send_batch" in r["message"]
    ]
    assert trace and all(r["campaign_id"] == campaign_id and "batch" in r for r in trace)
    log_text = "\n".join(lines)
    for address in [*ELIGIBLE, "out@example.com", "never@example.com"]:
        assert address not in log_text


def test_production_recipe_answers_health_and_counts_unsubscribes(
    settings: Settings, session_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production recipe of dispatcher-web.service: `dispatcher web` (granian) with its
    multiprocess folder; `dispatcher metrics serve` reads what its workers counted."""
    with session_scope(session_factory) as session:
        ann = make_contact(session, "ann@example.com").address_id
    port, metrics_port = free_port(), free_port()
    monkeypatch.setenv("DISPATCHER_WEB_BIND", f"127.0.0.1:{port}")
    monkeypatch.setenv("DISPATCHER_WEB_WORKERS", "2")
    monkeypatch.setenv("DISPATCHER_LOG_FORMAT", "json")
    monkeypatch.setenv("DISPATCHER_HOME", str(settings.home))
    monkeypatch.setenv("DISPATCHER_SECRET_KEYS", TEST_KEYS)
    monkeypatch.setenv(MULTIPROC_ENV, str(settings.home / "metrics" / "web"))
    (settings.home / "metrics" / "web").mkdir(parents=True)
    command = [str(BIN / "dispatcher"), "web"]
    token = TokenSigner(settings.secret_keys).sign_link(LinkPurpose.UNSUBSCRIBE, ann, None)
    with running(command, settings, tmp_path / "web.log", port) as base:
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as answer:
            assert json.load(answer) == {"status": "ok"}
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as answer:
            ready = json.load(answer)
        assert ready["status"] == "ok"
        assert [c["name"] for c in ready["checks"]] == ["database", "migrations", "keys"]
        for _ in range(2):  # the second changes nothing and is not counted
            assert one_click(f"{base}/u/{token}", "198.51.100.7") == 200
        # The first worker answers before the second has started: stop only once both have.
        wait_until(
            lambda: (tmp_path / "web.log").read_text().count("Started worker") == 2,
            30,
            interval=0.1,
            what="both workers started",
        )
    # The server's own lines (main process and workers, up to its shutdown) are JSON too.
    lines = [line for line in (tmp_path / "web.log").read_text().splitlines() if line]
    records = [json.loads(line) for line in lines]
    own = [r["message"] for r in records if r["logger"].startswith("_granian")]
    assert any(m.startswith("Listening at") for m in own), own
    assert sum(m.startswith("Started worker") for m in own) == 2, own
    assert any(m.startswith("Shutting down") for m in own), own
    # The default thread count follows the cores: granian has nothing to warn about.
    warned = [r["message"] for r in records if r["level"] in ("warning", "error", "critical")]
    assert warned == []
    assert token not in "\n".join(lines)
    monkeypatch.delenv(MULTIPROC_ENV)
    server = subprocess.Popen(
        [str(BIN / "dispatcher"), "metrics", "serve", "--port", str(metrics_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        found = scrape_until(metrics_port, lambda _: True, "metrics serve answering")
    finally:
        server.terminate()
        server.wait(30)
    key = ("dispatcher_unsubscribes_total", frozenset({("source", "one_click")}))
    assert found.get(key) == 1


@pytest.mark.parametrize(
    "command",
    [
        ["dispatcher", "web"],
        [
            "gunicorn",
            "-c",
            "python:dispatcher.console.gunicorn_conf",
            "dispatcher.web:create_app()",
        ],
    ],
    ids=["web", "console"],
)
def test_production_servers_with_a_bad_setting_stop_with_one_line(
    settings: Settings, tmp_path: Path, command: list[str]
) -> None:
    """Both production recipes (the recipient pages' and the console's) refuse a bad setting
    the way every command does: one line naming it, no traceback, a non-zero exit, before
    any worker starts."""
    env = {
        **os.environ,
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": "short",
        "DISPATCHER_WEB_BIND": f"127.0.0.1:{free_port()}",
        "DISPATCHER_CONSOLE_BIND": f"127.0.0.1:{free_port()}",
    }
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "configuration:" in done.stderr and "secret" in done.stderr.lower(), done.stderr
