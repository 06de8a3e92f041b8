"""Recipient pages under load: the production recipe against a trivial app on the same server.

    .venv/bin/python bench/recipient_load.py [--contacts 30000] [--requests 8000] [--quick]
        [--only get,prefs,first,repeated,storm] [--workers 2] [--threads 16]

Starts the production recipe (``dispatcher web``: granian, one process per core, PostgreSQL)
and a trivial Flask view under the same server settings, in the same run, and drives both
with the same client (``wrk``, unpacked from Debian's package into bench/.tools; a storm's
one-click POSTs come from a Python client alongside it). For each path it prints
requests/s, worker CPU per request (CPU of the server's worker processes / requests),
PostgreSQL's CPU per request (the database's backends and the server's own processes, from
/proc) and wrk's, how busy the whole machine was (anyone's work: other users' too),
p50/p95/p99 and the ratio to the trivial app, with the targets of issue 18; then the storm
(20,000 GETs at concurrency 64 with 500 one-click POSTs) and how many PostgreSQL sessions
the server opened (the pool's size is the bound: more means connection churn). Client and
server share this machine's cores: the load average is printed with the figures. Talks to
127.0.0.1 only; removes what it creates.
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from sqlalchemy import create_engine, func, select  # noqa: E402

from bench.common import (  # noqa: E402
    PG_ADMIN,
    TOOLS,
    PostgresCpu,
    bench_env,
    cpu_reference,
    free_port,
    postgres,
    say,
)
from bench.recipient_data import Population, prepare  # noqa: E402
from dispatcher.web import POOL_SPARE  # noqa: E402
from suppression.models import Suppression  # noqa: E402
from tests.support.production import Server, production, sessions_opened  # noqa: E402

ONE_CLICK = "List-Unsubscribe=One-Click"
TARGETS = {"one-click, first": 1000.0, "GET /u/<token>": 2000.0, "GET /preferences/<token>": 2000.0}

# wrk's script: paths from a file, each thread walking its own share (so first-time POSTs
# never repeat), an optional request limit per thread, and one RESULT line at the end.
WRK_SCRIPT = r"""
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  paths = {}
  for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
  nthreads = tonumber(os.getenv("BENCH_THREADS"))
  limit = tonumber(os.getenv("BENCH_LIMIT"))
  body = os.getenv("BENCH_BODY")
  i = tid
  answered = 0
  bad = 0
end
function request()
  local path = paths[(i % #paths) + 1]
  i = i + nthreads
  if body and body ~= "" then
    return wrk.format("POST", path, {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
  end
  return wrk.format("GET", path)
end
function response(status, headers, b)
  answered = answered + 1
  if status < 200 or status > 299 then bad = bad + 1 end
  if limit > 0 and answered == limit then
    -- wrk's main thread sleeps out -d whatever the threads do: tell the driver, which
    -- interrupts it, so the run's duration is the time the requests took.
    local marker = io.open(os.getenv("BENCH_DONE") .. "." .. tid, "w")
    marker:close()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), bad,
    e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_binary() -> Path:
    """Debian's wrk (and its LuaJIT), unpacked into bench/.tools (``apt-get download``,
    ``dpkg -x``): nothing is installed on the machine."""
    binary = TOOLS / "usr" / "bin" / "wrk"
    if binary.exists():
        return binary
    TOOLS.mkdir(parents=True, exist_ok=True)
    say("fetching Debian's wrk and libluajit2 packages (apt-get download, dpkg -x) ...")
    subprocess.run(
        ["apt-get", "download", "wrk", "libluajit2-5.1-2"],
        cwd=TOOLS,
        check=True,
        capture_output=True,
    )
    for deb in sorted(TOOLS.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(TOOLS)], check=True)
    if not binary.exists():
        raise RuntimeError("the wrk package holds no usr/bin/wrk")
    return binary


@dataclass
class Run:
    name: str
    requests: int
    seconds: float
    p50: float  # ms
    p95: float
    p99: float
    not_2xx: int
    socket_errors: int
    cpu: float  # worker CPU seconds
    busy: float = 0.0  # share of the machine's CPU time busy during the run (anyone's)
    pg_cpu: float = 0.0  # CPU seconds of PostgreSQL: the database's backends and its own
    client_cpu: float = 0.0  # CPU seconds of the client (wrk)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.requests if self.requests else 0.0

    def per_request(self, seconds: float) -> float:
        return 1000 * seconds / self.requests if self.requests else 0.0


def machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine so far (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(
    server: Server,
    name: str,
    paths: list[str],
    workdir: Path,
    *,
    limit: int,
    connections: int = 32,
    threads: int = 2,
    body: str = "",
    pg: PostgresCpu | None = None,
) -> Run:
    """``limit`` requests (the paths in turn) at ``connections`` concurrency."""
    script = workdir / "bench.lua"
    script.write_text(WRK_SCRIPT)
    listing = workdir / f"paths-{name.replace('/', '_').replace(' ', '_')}.txt"
    listing.write_text("\n".join(paths) + "\n")
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": str(TOOLS / "usr" / "lib" / "x86_64-linux-gnu"),
        "BENCH_PATHS": str(listing),
        "BENCH_THREADS": str(threads),
        "BENCH_LIMIT": str(max(1, limit // threads)),
        "BENCH_BODY": body,
    }
    done = workdir / f"done-{time.monotonic_ns()}"
    env["BENCH_DONE"] = str(done)
    cpu = server.worker_cpu()
    pg_before = pg.snapshot() if pg else {}
    client = children_cpu()
    ticks = machine_ticks()
    process = subprocess.Popen(
        [
            str(wrk_binary()),
            f"-t{threads}",
            f"-c{connections}",
            "-d120s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            server.base,
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    # Every wrk thread has answered its share (or wrk ended on its own): interrupt wrk's
    # sleep, so that it reports now.
    while process.poll() is None and len(list(workdir.glob(done.name + ".*"))) < threads:
        time.sleep(0.05)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    cpu = server.worker_cpu() - cpu
    client = children_cpu() - client
    after = machine_ticks()
    busy = (after[0] - ticks[0]) / max(1, after[1] - ticks[1])
    pg_cpu = PostgresCpu.spent(pg_before, pg.snapshot()) if pg else 0.0
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    n, micros, p50, p95, p99, bad, errors = (int(v) for v in line.split()[1:])
    return Run(
        name,
        n,
        micros / 1e6,
        p50 / 1000,
        p95 / 1000,
        p99 / 1000,
        bad,
        errors,
        cpu,
        busy,
        pg_cpu,
        client,
    )


def trivial_app() -> Flask:
    """The server's own ceiling: one view, no database, no template."""
    app = Flask("trivial")

    @app.get("/")
    def index() -> str:
        return "ok"

    @app.get("/u/<token>")
    def page(token: str) -> str:
        return "ok"

    return app


def report(run: Run, floor: Run | None) -> None:
    ratio = f"{run.rate / floor.rate:5.2f} x trivial" if floor else "  (the ceiling)"
    target = TARGETS.get(run.name)
    verdict = ""
    if target:
        verdict = f"; target >= {target:,.0f}/s: {'meets' if run.rate >= target else 'MISSES'}"
    say(
        f"{run.name:28s} {run.rate:7.0f} req/s  worker CPU {run.cpu_ms:5.2f} ms/req  "
        f"PostgreSQL {run.per_request(run.pg_cpu):4.2f} "
        f"wrk {run.per_request(run.client_cpu):4.2f} machine busy {100 * run.busy:3.0f}%  "
        f"p50 {run.p50:6.1f} p95 {run.p95:6.1f} p99 {run.p99:6.1f} ms  {ratio}  "
        f"({run.requests} requests, {run.not_2xx} not 2xx, {run.socket_errors} socket errors"
        f"{verdict})"
    )


def one_clicks(base: str, tokens: list[str], clients: int) -> tuple[list[float], dict[int, int]]:
    """POST one-click for each token from ``clients`` keep-alive connections; latencies (ms)
    and status codes."""
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()
    todo = iter(tokens)

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        for token in iter(lambda: next(todo, None), None):
            began = time.perf_counter()
            try:
                conn.request(
                    "POST",
                    f"/u/{token}",
                    body=ONE_CLICK,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                response = conn.getresponse()
                response.read()
                code = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                code = 0
            with lock:
                latencies.append(1000 * (time.perf_counter() - began))
                codes[code] = codes.get(code, 0) + 1
        conn.close()

    workers = [threading.Thread(target=client) for _ in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies, codes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


def storm(
    server: Server,
    population: Population,
    workdir: Path,
    url: str,
    gets: int,
    floor: Run,
    pg: PostgresCpu | None = None,
) -> None:
    """``gets`` GETs of the unsubscribe and preference pages at concurrency 64 (wrk) while
    500 one-click POSTs for addresses not yet unsubscribed arrive from 8 clients."""
    posts = population.unsubscribe[-500:]
    ids = population.address_ids[-500:]
    pages = [f"/u/{t}" for t in population.unsubscribe[:2000]] + [
        f"/preferences/{t}" for t in population.preferences[:2000]
    ]
    result: dict[str, Run] = {}
    background = threading.Thread(
        target=lambda: result.update(
            get=wrk(server, "storm GETs", pages, workdir, limit=gets, connections=64, pg=pg)
        )
    )
    background.start()
    time.sleep(1.0)  # the storm is under way when the first POST arrives
    latencies, codes = one_clicks(server.base, posts, clients=8)
    background.join()
    engine = create_engine(url)
    with engine.connect() as conn:
        applied = conn.execute(
            select(func.count(func.distinct(Suppression.address_id))).where(
                Suppression.address_id.in_(ids), Suppression.reason == "unsubscribe"
            )
        ).scalar_one()
    engine.dispose()
    report(result["get"], floor)
    p99 = percentile(latencies, 99)
    ok = codes.get(200, 0) == len(posts) and applied == len(posts) and p99 < 1000
    say(
        f"storm one-click POSTs: {len(posts)} from 8 clients during the GETs: codes {codes}, "
        f"p50 {percentile(latencies, 50):.0f} p95 {percentile(latencies, 95):.0f} p99 {p99:.0f}"
        f" max {max(latencies):.0f} ms; applied {applied}/{len(posts)}; target all 2xx, "
        f"p99 < 1 s, applied: {'meets' if ok else 'MISSES'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=30_000)
    parser.add_argument("--requests", type=int, default=8_000, help="per measured path")
    parser.add_argument("--storm-gets", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--threads", type=int, default=None, help="per process (default: the setting's)"
    )
    parser.add_argument("--quick", action="store_true", help="2,000 requests per path")
    parser.add_argument(
        "--hit-flush-seconds",
        type=float,
        default=1.0,
        help="DISPATCHER_WEB_HIT_FLUSH_SECONDS: how often the page views counted are written",
    )
    parser.add_argument(
        "--only",
        default="get,prefs,first,repeated,storm",
        help="which runs, of get,prefs,first,repeated,storm (the trivial view always runs)",
    )
    args = parser.parse_args()
    if args.threads is None:
        from dispatcher.settings import default_web_threads

        args.threads = default_web_threads()
    n = 2_000 if args.quick else args.requests
    only = set(args.only.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="dispatcher-recipient-load-"))
    wrk_binary()
    say(
        f"machine: {os.cpu_count()} cores, shared with the client and other users; load "
        f"average {os.getloadavg()[0]:.1f} at start, CPU reference sum(range(10**6)) "
        f"{cpu_reference():.1f} ms. dispatcher web (granian), {args.workers} "
        f"process(es) x {args.threads} threads; wrk -t2 -c32 (storm -c64)"
    )
    with postgres() as url:
        env = bench_env(
            workdir / "home", url, "unused", web_hit_flush_seconds=str(args.hit_flush_seconds)
        )
        population = prepare(settings_from_env(env), args.contacts)
        first = population.unsubscribe[: min(n, len(population.unsubscribe) - 600)]
        with production(
            env,
            free_port(),
            app="bench.recipient_load:trivial_app",
            workers=args.workers,
            threads=args.threads,
            probe="/",
        ) as trivial:
            wrk(trivial, "warm-up", ["/"], workdir, limit=500)
            floor = wrk(trivial, "trivial Flask view", ["/u/x"], workdir, limit=max(n, 20_000))
        report(floor, None)
        database = url.rsplit("/", 1)[1]
        pg = PostgresCpu(PG_ADMIN, database)
        before = sessions_opened(PG_ADMIN, database)
        with production(env, free_port(), workers=args.workers, threads=args.threads) as server:
            u = [f"/u/{t}" for t in population.unsubscribe]
            p = [f"/preferences/{t}" for t in population.preferences]
            wrk(server, "warm-up", u[-600:], workdir, limit=600)
            many, clicks = max(n, 20_000), [f"/u/{t}" for t in first]
            plan = {
                "get": lambda: wrk(server, "GET /u/<token>", u, workdir, limit=many, pg=pg),
                "prefs": lambda: wrk(
                    server, "GET /preferences/<token>", p, workdir, limit=many, pg=pg
                ),
                "first": lambda: wrk(
                    server,
                    "one-click, first",
                    clicks,
                    workdir,
                    limit=len(clicks),
                    body=ONE_CLICK,
                    pg=pg,
                ),
                "repeated": lambda: wrk(
                    server,
                    "one-click, repeated",
                    clicks,
                    workdir,
                    limit=len(clicks),
                    body=ONE_CLICK,
                    pg=pg,
                ),
            }
            runs = [run() for name, run in plan.items() if name in only]
            for run in runs:
                report(run, floor)
            if "storm" in only:
                storm(server, population, workdir, url, args.storm_gets, floor, pg)
        opened = sessions_opened(PG_ADMIN, database) - before
        pool = args.workers * (args.threads + POOL_SPARE)
        pg.engine.dispose()
        say(
            f"PostgreSQL sessions opened by the server during all of it: {opened} (its pools "
            f"hold {pool}: {args.workers} x ({args.threads} threads + {POOL_SPARE}); "
            f"{'no churn' if opened <= pool else 'CHURN'})"
        )
    say(
        f"load average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[1]:.1f}"
        " (5 min)"
    )


def settings_from_env(env: dict[str, str]):  # noqa: ANN201 - a Settings
    from bench.common import settings_from

    return settings_from(env)


if __name__ == "__main__":
    main()
