"""The two headline figures: the wire's ceiling and the pipeline through a real worker."""

from __future__ import annotations

import json
import multiprocessing
import re
import smtplib
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.common import (
    SUBJECT,
    TEMPLATE,
    Sink,
    bench_env,
    cpu_seconds,
    delete_queue,
    machine_busy_seconds,
    populate,
    postgres,
    scheduled_campaign,
    settings_from,
    tree_report,
)
from dispatcher.db import upgrade
from dispatcher.models import Campaign
from dispatcher.sending.composing import ClaimedRow, MessageFactory
from suppression.tokens import TokenSigner
from workers.process import WorkerProcess, wait_until

STAGES = ("claim", "sign", "render", "build", "send", "record")
# The worker's log lines (workers/observability.py): time, level, logger, [context]: text.
_TASK_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+(?: \[[^\]]*\])?: "
    r"Task workers\.tasks\.(\w+)\[[^\]]+\] (received|succeeded)"
)


def timeline(log: Path, scheduled_at: float) -> dict[str, float]:
    """Seconds after scheduling at which the worker received / finished the fan-out and the
    first and last send_batch (from Celery's own log lines; local time, ms resolution)."""
    points: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = _TASK_LINE.match(line)
        if not match:
            continue
        stamp, task, what = match.groups()
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() - scheduled_at
        key = f"{task} {what}"
        points.setdefault(f"first {key}", at)
        points[f"last {key}"] = at
    return points


def sample_message(home: Path) -> bytes:
    """One message exactly as the pipeline composes it (same template, links, headers)."""
    settings = settings_from(bench_env(home, "sqlite://", "unused"))
    campaign = Campaign(
        id=1,
        name="bench",
        subject=SUBJECT,
        template=TEMPLATE,
        purpose="marketing",
        message_nonce="0123456789abcdef",
    )
    factory = MessageFactory(settings, campaign, TokenSigner(settings.secret_keys))
    return factory.build(
        ClaimedRow(12345, 12345, 12345, "r12345@example.com", "First12345", "Last")
    )


def ceiling(port: int, message: bytes, count: int) -> float:
    """``count`` pre-rendered messages over one persistent smtplib connection, messages/s."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo()
    started = time.perf_counter()
    for i in range(count):
        client.sendmail("info@killertracks.com", [f"r{i}@example.com"], message)
    elapsed = time.perf_counter() - started
    client.quit()
    return count / elapsed


def _ceiling_process(port: int, message: bytes, count: int, start: Any, rates: Any) -> None:
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo()
    start.wait()  # every connection is open before any clock starts
    began = time.perf_counter()
    for i in range(count):
        client.sendmail("info@killertracks.com", [f"r{i}@example.com"], message)
    rates.put((began, time.perf_counter()))
    client.quit()


def ceiling_processes(port: int, message: bytes, count: int, processes: int) -> float:
    """The ceiling for ``processes`` senders: each its own process and its own smtplib
    connection, ``count`` pre-rendered messages in all; messages/s from the first start to
    the last finish. With one process it is :func:`ceiling`."""
    if processes == 1:
        return ceiling(port, message, count)
    context = multiprocessing.get_context("fork")
    start, rates = context.Barrier(processes), context.Queue()
    share = count // processes
    workers = [
        context.Process(target=_ceiling_process, args=(port, message, share, start, rates))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    spans = [rates.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(30)
    return share * processes / (max(e for _, e in spans) - min(b for b, _ in spans))


@dataclass
class PipelineResult:
    contacts: int
    elapsed: float
    outcome: dict[str, int]
    processes: dict[int, tuple[float, float]]  # pid -> (peak RSS MB, CPU s in the run)
    worker_pid: int
    sink_cpu: float
    machine_busy: float
    batches: int = 0
    stage_totals: dict[str, float] = field(default_factory=dict)
    timeline: dict[str, float] = field(default_factory=dict)
    messages: int = 0

    @property
    def sent(self) -> int:
        return self.outcome.get("sent", 0)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed

    @property
    def worker_cpu(self) -> float:
        return sum(cpu for _, cpu in self.processes.values())

    def per_message_ms(self) -> dict[str, float]:
        return {k: 1000 * v / max(self.messages, 1) for k, v in self.stage_totals.items()}


def _wait_terminal(database_url: str, campaign_id: int, timeout: float) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:

            def done() -> bool:
                status, fanning_out = conn.execute(
                    text("SELECT status, fanning_out FROM campaigns WHERE id = :c"),
                    {"c": campaign_id},
                ).one()
                # The fan-out adds the rows a range at a time: until its last range, the
                # rows so far may all be terminal (or none be there yet).
                if status == "scheduled" or fanning_out:
                    return False
                pending = conn.execute(
                    text(
                        "SELECT count(*) FROM deliveries WHERE campaign_id = :c "
                        "AND status IN ('queued', 'sending')"
                    ),
                    {"c": campaign_id},
                ).scalar_one()
                return int(pending) == 0

            wait_until(done, timeout, interval=0.05, what="every delivery row terminal")
            rows = conn.execute(
                text(
                    "SELECT status, count(*) FROM deliveries WHERE campaign_id = :c GROUP BY status"
                ),
                {"c": campaign_id},
            ).all()
    finally:
        engine.dispose()
    return {str(status): int(n) for status, n in rows}


def pipeline(
    contacts: int,
    sink: Sink,
    workdir: Path,
    *,
    pool: str,
    concurrency: int,
    batch_size: int,
    timeout: float = 600,
) -> PipelineResult:
    """One campaign to ``contacts`` contacts through a real worker on PostgreSQL + RabbitMQ,
    timed from scheduling to the last delivery row terminal."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    workdir = workdir / f"pipeline-{queue}"  # each run its own log, timings and home
    workdir.mkdir(parents=True)
    timings = workdir / "stages.jsonl"
    timings.unlink(missing_ok=True)
    with postgres() as database_url:
        env = bench_env(
            workdir / "home",
            database_url,
            queue,
            mail_url=f"smtp://127.0.0.1:{sink.port}",
            batch_size=str(batch_size),
            stage_timings=str(timings),
        )
        settings = settings_from(env)
        upgrade(settings)
        populate(database_url, contacts)
        worker = WorkerProcess(
            env, workdir / "worker.log", pool=pool, concurrency=concurrency, beat=True
        )
        try:
            with worker:
                assert worker.process is not None
                sink_before = cpu_seconds(sink.pid)
                busy_before = machine_busy_seconds()
                idle = tree_report(worker.process.pid)  # start-up CPU is not the campaign's
                started = time.perf_counter()
                scheduled_at = time.time()
                campaign_id = scheduled_campaign(settings, nudge=True)
                outcome = _wait_terminal(database_url, campaign_id, timeout)
                elapsed = time.perf_counter() - started
                processes = {
                    pid: (peak, cpu - idle.get(pid, (0.0, 0.0))[1])
                    for pid, (peak, cpu) in tree_report(worker.process.pid).items()
                }
                sink_cpu = cpu_seconds(sink.pid) - sink_before
                machine_busy = machine_busy_seconds() - busy_before
        finally:
            delete_queue(queue)
    result = PipelineResult(
        contacts, elapsed, outcome, processes, worker.process.pid, sink_cpu, machine_busy
    )
    result.timeline = timeline(workdir / "worker.log", scheduled_at)
    totals: defaultdict[str, float] = defaultdict(float)
    for line in timings.read_text().splitlines():
        batch = json.loads(line)
        result.messages += batch.pop("messages")
        result.batches += 1
        for stage, seconds in batch.items():
            totals[stage] += seconds
    result.stage_totals = {s: totals[s] for s in STAGES if s in totals}
    result.stage_totals.update({s: v for s, v in totals.items() if s not in STAGES})
    return result
