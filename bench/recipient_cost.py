"""What one recipient request costs: CPU of the app (this process), of PostgreSQL, statements.

    .venv/bin/python bench/recipient_cost.py [--contacts 5000] [--requests 1000] [--profile]

Runs ``create_app`` against a throw-away PostgreSQL database (or ``--sqlite``) through
Flask's test client, with no server and no network client in the way, so the figure is the
app's own work per request: the one-click POST first-time and repeated, the unsubscribe page
and the preference page. ``--profile`` prints cProfile's top functions for each path
(``SORT`` and ``TOP`` in the environment choose the order and how many) and the CPU per
package (Flask, werkzeug, SQLAlchemy, psycopg, itsdangerous, Jinja, this project).
Talks to 127.0.0.1 only; drops what it creates.

Last figures (issue 18; ``nice -n 19 … --contacts 2000 --requests 500``, PostgreSQL, load
average 9 falling to 7 on 2 shared cores, CPU reference 9.3 to 10.6 ms; main run alternately,
three runs each), ms of CPU per request (the app's; PostgreSQL's in brackets), main → this:
``GET /u/<token>`` 0.58–0.65 → 0.35–0.40 (PostgreSQL 0.16–0.20 → 0.06–0.08);
``GET /preferences/<token>`` 0.72–0.82 → 0.41–0.51 (0.24–0.32 → 0.12–0.16); the one-click
POSTs unchanged (first 1.0–1.4, PostgreSQL 0.7–0.9; repeated 0.7–0.9, 0.34–0.40).
The round after (load average 3.5 to 17, six runs each, 816ecf2 → this): the preference
page 0.43–0.55 → 0.37–0.42 in one statement; the one-click's statements on the DBAPI
cursor: first 1.18–1.66 → 1.06–1.23, repeated 0.79–0.98 → 0.68–0.76 (PostgreSQL unchanged).
See the README, "The web edge".
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from sqlalchemy import Engine, event  # noqa: E402

from bench.common import (  # noqa: E402
    PG_ADMIN,
    PostgresCpu,
    bench_env,
    cpu_reference,
    postgres,
    say,
    settings_from,
)
from bench.recipient_data import Population, prepare  # noqa: E402
from dispatcher.db import PageReads  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402
from dispatcher.web import create_app  # noqa: E402

ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Cost:
    path: str
    requests: int
    cpu_ms: float  # per request, this process (the app, the driver, the test client)
    statements: float  # per request
    codes: dict[int, int]
    pg_ms: float = 0.0  # PostgreSQL's CPU per request (its backends and its own processes)


class StatementCounter:
    """Statements through SQLAlchemy, and the link pages' reads on the DBAPI cursor
    (``dispatcher.db.PageReads``), which SQLAlchemy's events do not see."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)
        rows = PageReads.rows

        def counted(reads: PageReads, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return rows(reads, *args, **kwargs)

        PageReads.rows = counted  # type: ignore[method-assign]

    def _seen(self, *_args: object) -> None:
        self.count += 1


def engine_of(app: Flask) -> Engine:
    bind = app.extensions["dispatcher.sessions"].kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def measure(
    app: Flask,
    name: str,
    send: Callable[[int], int],
    n: int,
    counter: StatementCounter,
    profile: bool,
    pg: PostgresCpu | None = None,
) -> Cost:
    codes: dict[int, int] = {}
    pg_before = pg.snapshot() if pg else {}
    profiler = cProfile.Profile(time.process_time) if profile else None
    before = counter.count
    cpu = time.process_time()
    if profiler:
        profiler.enable()
    for i in range(n):
        code = send(i)
        codes[code] = codes.get(code, 0) + 1
    # The page views these requests counted are written here, charged to them (not to the
    # next path's requests, during which the app's thread would write them).
    hits = app.extensions.get("dispatcher.hits")
    if hits is not None:
        hits.flush()
    if profiler:
        profiler.disable()
    cpu = time.process_time() - cpu
    pg_ms = 1000 * PostgresCpu.spent(pg_before, pg.snapshot()) / n if pg else 0.0
    cost = Cost(name, n, 1000 * cpu / n, (counter.count - before) / n, codes, pg_ms)
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(os.environ.get("SORT", "tottime")).print_stats(
            int(os.environ.get("TOP", "25"))
        )
        say(out.getvalue())
        say(f"{name}: own CPU by package, share of the profiled time")
        for package, share in by_package(stats):
            say(f"  {package:28s} {100 * share:5.1f} %")
    return cost


def _package(filename: str) -> str:
    """Which library (or part of this project) a profiled function's file belongs to."""
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins and generated code"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if filename.startswith(str(ROOT)):
        return "project: " + filename[len(str(ROOT)) + 1 :].split("/", 1)[0]
    if filename.endswith((".html", ".txt")):
        return "templates (jinja2)"
    return "python stdlib"


def by_package(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Own time (tottime) per package, largest first, as shares of the whole."""
    totals: dict[str, float] = {}
    for (filename, _line, _name), row in stats.stats.items():  # type: ignore[attr-defined]
        totals[_package(filename)] = totals.get(_package(filename), 0.0) + row[2]
    whole = sum(totals.values()) or 1.0
    return sorted(((k, v / whole) for k, v in totals.items()), key=lambda kv: -kv[1])


def costs(
    settings: Settings, population: Population, n: int, *, profile: bool = False
) -> list[Cost]:
    app = create_app(settings)
    url = settings.database_url
    pg = PostgresCpu(PG_ADMIN, url.rsplit("/", 1)[1]) if url.startswith("postgresql") else None
    counter = StatementCounter(engine_of(app))
    client = app.test_client()
    # Warm up: the first requests compile statements and templates.
    for i in range(5):
        client.get(f"/u/{population.spare_unsubscribe[i]}")
        client.get(f"/preferences/{population.spare_preferences[i]}")
        client.post(f"/u/{population.spare_unsubscribe[i]}", data=ONE_CLICK, content_type=FORM)
    n = min(n, len(population.unsubscribe))
    u, p = population.unsubscribe, population.preferences

    def post(i: int) -> int:
        return client.post(f"/u/{u[i]}", data=ONE_CLICK, content_type=FORM).status_code

    results = [
        measure(
            app,
            "GET /favicon.ico (no database: the floor)",
            lambda i: client.get("/favicon.ico").status_code,
            n,
            counter,
            False,
            pg,
        ),
        measure(
            app,
            "GET /u/<token> (page)",
            lambda i: client.get(f"/u/{u[i]}").status_code,
            n,
            counter,
            profile,
            pg,
        ),
        measure(
            app,
            "GET /preferences/<token>",
            lambda i: client.get(f"/preferences/{p[i]}").status_code,
            n,
            counter,
            profile,
            pg,
        ),
        measure(app, "POST /u/<token> one-click, first", post, n, counter, profile, pg),
        measure(app, "POST /u/<token> one-click, repeated", post, n, counter, profile, pg),
    ]
    app.extensions["dispatcher.hits"].close()  # the page views written before the drop
    engine_of(app).dispose()
    if pg:
        pg.engine.dispose()
    return results


def report(results: list[Cost]) -> None:
    say(f"CPU reference: sum(range(10**6)) took {cpu_reference():.1f} ms of CPU")
    for c in results:
        say(
            f"{c.path:38s} {c.cpu_ms:6.2f} ms CPU/request  {c.statements:5.1f} statements/request"
            f"  PostgreSQL {c.pg_ms:5.2f} ms CPU/request"
            f"  ({c.requests} requests, codes {c.codes})"
        )


@contextmanager
def database(sqlite: bool, home: Path) -> Iterator[str]:
    if sqlite:
        yield f"sqlite:///{home}/bench.db"
    else:
        with postgres() as url:
            yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dispatcher-recipient-cost-"))
    with database(args.sqlite, home) as url:
        settings = settings_from(bench_env(home, url, "unused"))
        population = prepare(settings, args.contacts)
        say(
            f"in-process, Flask test client, {'SQLite' if args.sqlite else 'PostgreSQL'}, "
            f"{args.contacts} contacts with a queued campaign"
        )
        report(costs(settings, population, args.requests, profile=args.profile))


if __name__ == "__main__":
    main()
