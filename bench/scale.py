"""How cost grows: the gate against a long suppression list, fan-out of a million recipients,
and SQL statements per batch (no N+1).

``python bench/scale.py fan-out-child CAMPAIGN_ID`` is the child process the fan-out step
runs (the worker's own task code, in a process of its own so its peak memory is its own).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script (the fan-out child)
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    bench_env,
    delete_queue,
    populate,
    postgres,
    scheduled_campaign,
    settings_from,
    status_kb,
)
from dispatcher.campaigns.fanout import fan_out, refill  # noqa: E402
from dispatcher.db import make_engine, make_sessionmaker, session_scope, upgrade  # noqa: E402
from dispatcher.models import Campaign  # noqa: E402
from dispatcher.sending.batch import claim_batch, send_batch  # noqa: E402
from suppression.tokens import TokenSigner  # noqa: E402

CLAIM = re.compile(r"^\s*UPDATE deliveries SET status=CASE", re.S)


@contextmanager
def statement_log(engine: Engine) -> Iterator[list[tuple[str, Any, float]]]:
    """Every statement the engine runs inside the block: (sql, parameters, seconds)."""
    log: list[tuple[str, Any, float]] = []

    def before(conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        log.append((statement, params, time.perf_counter() - conn.info.pop("bench_started")))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield log
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def explain(engine: Engine, statement: str, params: Any) -> list[str]:
    """EXPLAIN ANALYZE of a captured statement, in a transaction rolled back afterwards."""
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            return [str(r[0]) for r in rows]
        finally:
            transaction.rollback()


_SCAN = re.compile(
    r"((?:Parallel )?(?:Bitmap Heap|Bitmap Index|Index Only|Index|Seq) Scan)"
    r"(?: using (\w+))? on (\w+)"
)
GROWING = ("deliveries", "suppressions", "consent_states", "addresses", "contacts")


def scans(plan: list[str]) -> list[str]:
    """The plan's scans, counted: "Index Scan using IX on TABLE x3"; a sequential scan of a
    table that grows with the lists is marked as a problem."""
    found: Counter[str] = Counter()
    for line in plan:
        match = _SCAN.search(line)
        if match:
            kind, index, table = match.groups()
            label = f"{kind} using {index} on {table}" if index else f"{kind} on {table}"
            if "Seq Scan" in kind and table in GROWING:
                label += " (PROBLEM: grows with the table)"
            found[label] += 1
    return [f"{label} x{n}" for label, n in found.items()]


@dataclass
class GateCost:
    suppressions: int
    claim_ms_per_recipient: float  # the claim UPDATE (the gate) alone, median over batches
    claim_batch_ms_per_recipient: float  # claim_batch: the UPDATE and reading the rows back
    plan_scans: list[str]


def _claim_costs(
    engine: Engine, campaign_id: int, batches: list[tuple[int, int]]
) -> tuple[list[float], list[float], list[str]]:
    sessions = make_sessionmaker(engine)
    statement_share: list[float] = []
    whole: list[float] = []
    plan: list[str] = []
    for index, (first, last) in enumerate(batches):
        if index == 0:
            # The plan of the claim statement, on rows still queued, rolled back.
            with sessions() as session, statement_log(engine) as log:
                transaction = session.begin()
                campaign = session.get_one(Campaign, campaign_id)
                claim_batch(session, campaign, first, last, uuid.uuid4().hex)
                transaction.rollback()
            statement, params, _ = next(entry for entry in log if CLAIM.match(entry[0]))
            plan = explain(engine, statement, params)
        with session_scope(sessions) as session, statement_log(engine) as log:
            campaign = session.get_one(Campaign, campaign_id)
            began = time.perf_counter()
            rows, skipped = claim_batch(session, campaign, first, last, uuid.uuid4().hex)
            elapsed = time.perf_counter() - began
        recipients = len(rows) + skipped
        if not recipients:
            continue
        claim = sum(seconds for sql, _, seconds in log if CLAIM.match(sql))
        statement_share.append(claim / recipients)
        whole.append(elapsed / recipients)
    return statement_share, whole, plan


def gate_cost(suppressions: int, workdir: Path, contacts: int = 10_000) -> GateCost:
    """Claim cost per recipient with ``suppressions`` suppression rows in the database."""
    with postgres() as database_url:
        settings = settings_from(bench_env(workdir / "gate", database_url, "unused"))
        upgrade(settings)
        populate(database_url, contacts, extra_suppressions=max(0, suppressions - contacts // 10))
        campaign_id = scheduled_campaign(settings)
        engine = make_engine(database_url)
        batches = list(fan_out(make_sessionmaker(engine), campaign_id, 500))
        statement_share, whole, plan = _claim_costs(engine, campaign_id, batches)
        engine.dispose()
    return GateCost(
        suppressions,
        1000 * statistics.median(statement_share),
        1000 * statistics.median(whole),
        scans(plan),
    )


# --- N+1 --------------------------------------------------------------------------------------

LEASE = re.compile(r"^\s*UPDATE deliveries SET renewed_at=", re.S)


def statements_per_batch(batch_size: int, sink_port: int, workdir: Path) -> dict[str, Any]:
    """Statements one ``send_batch`` issues (in process, SMTP to the sink), by kind.

    Lease renewals are counted apart: they are timed (one per 2 s of sending), not per row.
    """
    with postgres() as database_url:
        settings = settings_from(
            bench_env(
                workdir / f"n1-{batch_size}",
                database_url,
                "unused",
                mail_url=f"smtp://127.0.0.1:{sink_port}",
            )
        )
        upgrade(settings)
        populate(database_url, batch_size * 2)
        campaign_id = scheduled_campaign(settings)
        engine = make_engine(database_url)
        sessions = make_sessionmaker(engine)
        first, last = next(iter(fan_out(sessions, campaign_id, batch_size)))
        signer = TokenSigner(settings.secret_keys)
        with statement_log(engine) as log:
            result = send_batch(settings, sessions, signer, campaign_id, first, last)
        engine.dispose()
    kinds = Counter(" ".join(sql.split()[:3]) for sql, _, _ in log if not LEASE.match(sql))
    return {
        "statements": sum(kinds.values()),
        "lease_renewals": sum(1 for sql, _, _ in log if LEASE.match(sql)),
        "kinds": dict(kinds),
        "claimed": result.claimed,
        "skipped": result.skipped,
        "sent": len(result.sent),
    }


# --- fan-out of a million ---------------------------------------------------------------------


def _rabbitmq_rss_mb() -> float:
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            content = status.read_text()
        except OSError:
            continue
        if content.startswith("Name:\tbeam.smp"):
            return status_kb(int(status.parent.name), "VmRSS") / 1024
    return 0.0


def fan_out_million(recipients: int, workdir: Path) -> dict[str, Any]:
    """Fan-out of ``recipients`` contacts by the worker's task code in a child process:
    its time, the child's peak RSS, the peak RSS of the PostgreSQL backends it used, and
    then the cost of claiming one batch in a table that large."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    with postgres() as database_url:
        env = bench_env(workdir / "fanout", database_url, queue)
        settings = settings_from(env)
        upgrade(settings)
        began = time.perf_counter()
        populate(database_url, recipients)
        populated = time.perf_counter() - began
        campaign_id = scheduled_campaign(settings)
        rabbit_before = _rabbitmq_rss_mb()
        try:
            child = subprocess.run(
                [sys.executable, __file__, "fan-out-child", str(campaign_id)],
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=max(900, recipients // 2000),
            )
        finally:
            rabbit_after = _rabbitmq_rss_mb()
            delete_queue(queue)
        if child.returncode != 0:
            raise RuntimeError(f"fan-out child failed:\n{child.stderr[-3000:]}")
        report: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
        engine = make_engine(database_url)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT min(id), max(id) FROM deliveries WHERE campaign_id = :c"),
                {"c": campaign_id},
            ).one()
            database_mb = conn.execute(
                text("SELECT pg_database_size(current_database()) / 1048576.0")
            ).scalar_one()
        middle = (int(rows[0]) + int(rows[1])) // 2
        batches = [(middle + i * 500, middle + i * 500 + 499) for i in range(5)]
        # Refills first: the claims below take rows that may lie in the published window.
        refills = _refill_costs(engine, campaign_id, settings.batch_size, settings.batch_window)
        statement_share, whole, plan = _claim_costs(engine, campaign_id, batches)
        engine.dispose()
    report.update(
        refill_ms=statistics.median(refills),
        refill_slowest=dict(REFILL_SLOWEST),
        populate_s=populated,
        database_mb=float(database_mb),
        rabbitmq_rss_mb=(rabbit_before, rabbit_after),
        claim_ms_per_recipient=1000 * statistics.median(statement_share),
        claim_batch_ms_per_recipient=1000 * statistics.median(whole),
        claim_plan_scans=scans(plan),
    )
    return report


def _refill_costs(engine: Engine, campaign_id: int, batch_size: int, window: int) -> list[float]:
    """Time of one window refill that publishes one batch, in a table this large (the
    statements every finished batch runs); the window is widened by one each time so that
    each call has a batch to cut."""
    sessions = make_sessionmaker(engine)
    costs = []
    slowest: tuple[float, str, Any] = (0.0, "", None)
    for extra in range(1, 6):
        with statement_log(engine) as log:
            began = time.perf_counter()
            published = refill(sessions, campaign_id, batch_size, window + extra)
            costs.append(1000 * (time.perf_counter() - began))
        assert len(published) == 1, published
        for sql, params, seconds in log:
            if seconds * 1000 > slowest[0]:
                slowest = (seconds * 1000, sql, params)
    ms, sql, params = slowest
    plan = (
        scans(explain(engine, sql, params))
        if sql.lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE", "WITH"))
        else []
    )
    REFILL_SLOWEST.update(ms=ms, statement=" ".join(sql.split())[:70], plan=plan)
    return costs


# The slowest statement of the refills timed last, for the report (ms, statement, plan).
REFILL_SLOWEST: dict[str, Any] = {}


def _fan_out_child(campaign_id: int) -> None:
    from workers import tasks
    from workers.runtime import runtime

    # When the first send_batch left for the broker: the fan-out publishes after each range
    # of contacts, so workers start before it has added every row.
    first_publish: list[float] = []
    publish = tasks.send_batch_task.apply_async

    def timed(*args: Any, **kwargs: Any) -> Any:
        if not first_publish:
            first_publish.append(time.perf_counter())
        return publish(*args, **kwargs)

    tasks.send_batch_task.apply_async = timed  # type: ignore[method-assign]
    began = time.perf_counter()
    batches = tasks.fan_out_campaign(campaign_id)  # the task body, run here
    elapsed = time.perf_counter() - began
    rt = runtime()
    with session_scope(rt.sessions) as session:
        backends = [
            int(pid)
            for pid in session.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            ).scalars()
        ]
        added = session.execute(
            text("SELECT count(*) FROM deliveries WHERE campaign_id = :c"), {"c": campaign_id}
        ).scalar_one()
    report = {
        "elapsed_s": elapsed,
        "first_publish_s": (first_publish[0] - began) if first_publish else None,
        "batches": batches,
        "deliveries": int(added),
        "child_peak_rss_mb": status_kb(os.getpid(), "VmHWM") / 1024,
        "postgres_backend_peak_rss_mb": [status_kb(pid, "VmHWM") / 1024 for pid in backends],
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "fan-out-child":
        _fan_out_child(int(sys.argv[2]))
    else:
        sys.exit(f"usage: {sys.argv[0]} fan-out-child CAMPAIGN_ID (bench/run.py runs this)")
