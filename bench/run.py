"""Throughput benchmark: the pipeline against the wire (see bench/README.md).

    .venv/bin/python bench/run.py [--contacts 20000] [--quick] [--scale]

Needs PostgreSQL and RabbitMQ on 127.0.0.1 (as on the development machines). Everything it
creates (databases, queues, processes, files) it removes. Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import cpu_reference, say, smtp_sink  # noqa: E402
from bench.pipeline import (  # noqa: E402
    PipelineResult,
    ceiling,
    ceiling_processes,
    pipeline,
    sample_message,
)
from bench.scale import fan_out_million, gate_cost, statements_per_batch  # noqa: E402


def _verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


TARGET_RATIO = 0.8  # issue 13: pipeline / ceiling, one process and N processes alike
TARGET_POOL_RSS_MB = 80.0


def report_pipeline(
    result: PipelineResult, wire: float, concurrency: int, wire_n: float | None = None
) -> None:
    ratio = result.rate / wire
    per_core = result.sent / result.worker_cpu if result.worker_cpu else 0.0
    say(
        f"pipeline: {result.rate:8.0f} msg/s  ({result.sent} sent of {result.contacts} contacts"
        f" in {result.elapsed:.1f} s, schedule -> last row terminal; rows {result.outcome})"
    )
    if concurrency == 1:
        verdict = f"one worker core, target >= {TARGET_RATIO}: {_verdict(ratio >= TARGET_RATIO)}"
    else:
        verdict = "the one-core target is judged with --concurrency 1"
    say(f"ratio   : {ratio:8.2f}  pipeline / ceiling, {concurrency} worker process(es); {verdict}")
    if wire_n is not None:
        fair = result.rate / wire_n
        say(
            f"ratio   : {fair:8.2f}  pipeline / ceiling of {concurrency} sending processes "
            f"({wire_n:.0f} msg/s); target >= {TARGET_RATIO}: {_verdict(fair >= TARGET_RATIO)}"
        )
    say(
        f"per worker CPU-second: {per_core:.0f} msg = {per_core / wire:.2f} x ceiling "
        f"({result.worker_cpu:.1f} CPU-s in the worker's processes; CPU only, the wait for "
        f"the server's replies is not in it)"
    )
    others = result.machine_busy - result.worker_cpu - result.sink_cpu
    say(
        f"CPU during the run: machine busy {result.machine_busy:.1f} of "
        f"{result.elapsed * (os.cpu_count() or 1):.1f} core-s; worker {result.worker_cpu:.1f}, "
        f"smtp-sink {result.sink_cpu:.1f}, everything else (PostgreSQL, RabbitMQ, this "
        f"script, other users of the machine) {others:.1f}"
    )
    for pid, (peak, cpu) in result.processes.items():
        role = "worker main process" if pid == result.worker_pid else "child (pool or beat)"
        say(f"  peak RSS {peak:6.1f} MB, CPU {cpu:6.1f} s  pid {pid} {role}")
    say(f"worker peak RSS: {max(p for p, _ in result.processes.values()):.1f} MB (largest process)")
    # The pool processes are the children that did the sending (most of the worker's CPU);
    # the embedded beat is a child too, but nearly idle.
    senders = [
        peak
        for pid, (peak, cpu) in result.processes.items()
        if pid != result.worker_pid and cpu >= 0.2 * result.worker_cpu / concurrency
    ]
    if senders:
        worst = max(senders)
        say(
            f"pool process peak RSS while sending: {worst:.1f} MB (largest of {len(senders)}); "
            f"target <= {TARGET_POOL_RSS_MB:.0f} MB: {_verdict(worst <= TARGET_POOL_RSS_MB)}"
        )
    wanted = (
        "first start_due_campaigns received",
        "first fan_out_campaign received",
        "last fan_out_campaign succeeded",
        "first send_batch received",
        "last send_batch succeeded",
    )
    say(
        "timeline (s after scheduling, worker log): "
        + ", ".join(f"{k} {result.timeline[k]:.2f}" for k in wanted if k in result.timeline)
    )
    stages = result.per_message_ms()
    total = sum(stages.values())
    say(
        f"per message, ms of worker time ({result.messages} messages in {result.batches} "
        f"batches): "
        + ", ".join(f"{k} {v:.3f}" for k, v in stages.items())
        + f"; sum {total:.3f} (= {1000 / total:.0f} msg/s per busy core)"
    )


TARGET_RABBITMQ_MB = 150.0


def report_fan_out(sizes: list[int], workdir: Path) -> None:
    """Fan-out of each size through the worker's task code (a bounded window of batches is
    published), and the claim cost in a deliveries table that large."""
    claims: dict[int, float] = {}
    for size in sizes:
        fan = fan_out_million(size, workdir)
        claims[fan["deliveries"]] = fan["claim_ms_per_recipient"]
        peak = max([fan["child_peak_rss_mb"], *fan["postgres_backend_peak_rss_mb"]])
        rabbit_before, rabbit_after = fan["rabbitmq_rss_mb"]
        first = fan["first_publish_s"]
        say(
            f"fan-out of {fan['deliveries']:,} recipients: {fan['elapsed_s']:.1f} s to add "
            f"every row, the first batch published after "
            f"{'-' if first is None else f'{first:.2f}'} s (workers send from then on); "
            f"{fan['batches']} batches published (the window; the rest as batches finish; "
            f"data set up in {fan['populate_s']:.0f} s; database {fan['database_mb']:,.0f} MB)"
        )
        say(
            f"  peak RSS: fan-out process {fan['child_peak_rss_mb']:.0f} MB; PostgreSQL "
            f"backend(s) {', '.join(f'{m:.0f}' for m in fan['postgres_backend_peak_rss_mb'])}"
            f" MB (largest {peak:.0f} MB, target < 300 MB: {_verdict(peak < 300)})"
        )
        say(
            f"  RabbitMQ RSS {rabbit_before:.0f} -> {rabbit_after:.0f} MB (target <= "
            f"{TARGET_RABBITMQ_MB:.0f} MB: {_verdict(rabbit_after <= TARGET_RABBITMQ_MB)}; the "
            f"broker is shared with other users of the machine)"
        )
        say(
            f"  claim in a {fan['deliveries']:,}-row deliveries table: statement "
            f"{fan['claim_ms_per_recipient']:.4f} ms/recipient, claim_batch "
            f"{fan['claim_batch_ms_per_recipient']:.4f} ms/recipient; plan: "
            + " | ".join(fan["claim_plan_scans"])
        )
        say(f"  window refill (each finished batch runs one): {fan['refill_ms']:.1f} ms")
        slow = fan["refill_slowest"]
        if slow:
            say(
                f"    slowest refill statement {slow['ms']:.1f} ms: {slow['statement']} ...; "
                "plan: " + " | ".join(slow["plan"])
            )
    if len(claims) > 1:
        small, large = min(claims), max(claims)
        growth = claims[large] / claims[small]
        say(
            f"claim growth {small:,} -> {large:,} deliveries: {growth:.2f}x per recipient "
            f"(target flat, <= 1.5x: {_verdict(growth <= 1.5)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2,000 contacts, nothing else")
    parser.add_argument(
        "--scale", action="store_true", help="also gate cost 10k vs 5M suppressions, 1M fan-out"
    )
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads"])
    parser.add_argument(
        "--concurrency",
        type=int,
        help="worker processes (default: one per core, then again with one for the 1-core target)",
    )
    parser.add_argument("--batch-size", type=int, default=200, help="the shipped default: 200")
    parser.add_argument(
        "--only",
        choices=["pipeline", "statements", "scale", "fanout"],
        help="run one part alone (scale: the gate and the fan-out; fanout: the fan-out alone)",
    )
    parser.add_argument(
        "--fan-out-sizes",
        default="1000000,2000000",
        help="recipients of each fan-out step of --scale, comma-separated (each step prints "
        "its database's size: extrapolate before asking for 10000000)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (worker logs, stage timings)"
    )
    args = parser.parse_args()
    contacts = 2_000 if args.quick else args.contacts
    cores = os.cpu_count() or 1
    runs = [args.concurrency] if args.concurrency else sorted({cores, 1}, reverse=True)
    workdir = Path(tempfile.mkdtemp(prefix="dispatcher-bench-"))
    began = time.perf_counter()
    say(
        f"machine: {os.cpu_count()} cores (shared: figures are noisy); PostgreSQL + RabbitMQ "
        f"on 127.0.0.1; worker {args.pool}, processes {runs}; batch size {args.batch_size}; "
        f"load average {os.getloadavg()[0]:.1f}; CPU reference sum(range(10**6)) "
        f"{cpu_reference():.1f} ms"
    )
    try:
        with smtp_sink() as sink:
            if args.only in (None, "pipeline"):
                message = sample_message(workdir / "sample")
                eligible = contacts - 2 * (contacts // 10)
                before = ceiling(sink.port, message, eligible)
                results = [
                    pipeline(
                        contacts,
                        sink,
                        workdir,
                        pool=args.pool,
                        concurrency=n,
                        batch_size=args.batch_size,
                    )
                    for n in runs
                ]
                after = ceiling(sink.port, message, eligible)
                wire = (before + after) / 2
                say(
                    f"ceiling : {wire:8.0f} msg/s  ({eligible} pre-rendered messages of "
                    f"{len(message)} bytes, smtplib, one connection, one process, smtp-sink; "
                    f"mean of {before:.0f} before and {after:.0f} after the pipeline runs)"
                )
                fair = {
                    n: ceiling_processes(sink.port, message, eligible, n) for n in runs if n > 1
                }
                for n, rate in fair.items():
                    say(
                        f"ceiling : {rate:8.0f} msg/s  with {n} sending processes (each its own "
                        f"smtplib connection, {eligible // n} pre-rendered messages each)"
                    )
                for n, result in zip(runs, results, strict=True):
                    say(f"--- worker with {n} process(es)")
                    report_pipeline(result, wire, n, fair.get(n))
            if args.only in (None, "statements"):
                counts = {n: statements_per_batch(n, sink.port, workdir) for n in (50, 500)}
                for n, c in counts.items():
                    say(
                        f"SQL statements per send_batch, batch {n}: {c['statements']} "
                        f"(+{c['lease_renewals']} timed lease renewals; claimed {c['claimed']},"
                        f" skipped {c['skipped']}, sent {c['sent']}) {c['kinds']}"
                    )
                same = counts[50]["statements"] == counts[500]["statements"]
                say(f"statements constant in batch size: {_verdict(same)}")
        if args.only == "scale" or (args.scale and not args.quick and args.only is None):
            small = gate_cost(10_000, workdir)
            large = gate_cost(5_000_000, workdir)
            for g in (small, large):
                say(
                    f"gate with {g.suppressions:>9,} suppression rows: claim statement "
                    f"{g.claim_ms_per_recipient:.4f} ms/recipient, claim_batch "
                    f"{g.claim_batch_ms_per_recipient:.4f} ms/recipient; plan: "
                    + " | ".join(g.plan_scans)
                )
            growth = large.claim_ms_per_recipient / small.claim_ms_per_recipient
            say(f"gate growth 10k -> 5M: {growth:.2f}x (target <= 1.5x: {_verdict(growth <= 1.5)})")
        if args.only in ("scale", "fanout") or (args.scale and not args.quick and not args.only):
            report_fan_out([int(n) for n in args.fan_out_sizes.split(",")], workdir)
    finally:
        if args.keep:
            say(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"benchmark took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
