"""Where a first one-click's PostgreSQL CPU goes, and what sending its round trips together
would save: its statements replayed on one connection, without the app.

    .venv/bin/python bench/click_replay.py [--clicks 1500]

Makes the recipient benchmarks' population (``bench/recipient_data.py``) in a throw-away
PostgreSQL database, lets the app answer one first one-click while it records the
statements the click sent (SQL and parameters), then replays them for new addresses of the
same campaign, four ways, ``--clicks`` each:

- as the app sends them: BEGIN, each statement, COMMIT, one round trip each; then as many
  clicks again with the backend's CPU read from /proc around each message (a 10 ms clock,
  so summed over many clicks), for its share per statement;
- as one message of SQL with the parameters bound by the client (``psycopg.ClientCursor``):
  one round trip, but nothing prepared;
- in psycopg's pipeline mode: the same six messages sent together, one sync, prepared
  statements kept (what a click whose statements do not wait for each other could do);
- as one call of a PL/pgSQL function (made in ``pg_temp`` for the run) that holds the four
  statements with the click's parameters as its arguments: one round trip in autocommit,
  PostgreSQL keeping each statement's plan (what moving the click into the database would
  save; the app has no such function).

Prints PostgreSQL's CPU and this process's (the client's: psycopg, not the app) per click
for each. Talks to 127.0.0.1 only; drops what it creates.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import Engine, event  # noqa: E402

from bench.common import bench_env, postgres, process_cpu, say, settings_from  # noqa: E402
from bench.recipient_data import prepare  # noqa: E402
from dispatcher.web import create_app  # noqa: E402

ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"
NAMES = ("the held read", "the suppression", "the consent rule", "the stop of queued mail")

Statement = tuple[str, dict[str, Any]]


def recorded_click(url: str, token: str) -> list[Statement]:
    """The statements (SQL, parameters) the app sends for one first one-click."""
    settings = settings_from(bench_env(Path(tempfile.mkdtemp()), url, "unused"))
    app = create_app(settings)
    engine = app.extensions["dispatcher.sessions"].kw["bind"]
    assert isinstance(engine, Engine)
    seen: list[Statement] = []

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, *_rest: Any) -> None:
        seen.append((sql, dict(params)))

    event.listen(engine, "before_cursor_execute", record)
    answer = app.test_client().post(f"/u/{token}", data=ONE_CLICK, content_type=FORM)
    event.remove(engine, "before_cursor_execute", record)
    app.extensions["dispatcher.hits"].close()
    engine.dispose()
    if answer.status_code != 200 or len(seen) != len(NAMES):
        raise SystemExit(
            f"expected a 200 and {len(NAMES)} statements, got {answer.status_code} and "
            f"{len(seen)}: the one-click's statements changed, and this replay with them"
        )
    return seen


def for_address(statements: list[Statement], address_id: int) -> list[Statement]:
    """The same statements for another address of the campaign."""
    return [
        (sql, {k: address_id if k.endswith("address_id") else v for k, v in params.items()})
        for sql, params in statements
    ]


@contextmanager
def measured(pid: int, label: str, clicks: int) -> Iterator[None]:
    backend, client = process_cpu(pid), time.process_time()
    yield
    backend, client = process_cpu(pid) - backend, time.process_time() - client
    say(
        f"{label:44s} PostgreSQL {1000 * backend / clicks:5.2f} ms  "
        f"client {1000 * client / clicks:5.2f} ms of CPU a click"
    )


def round_trips(conn: psycopg.Connection[Any], pid: int, clicks: list[list[Statement]]) -> None:
    with measured(pid, "six round trips (as the app sends them)", len(clicks)):
        for click in clicks:
            conn.execute("BEGIN")
            for sql, params in click:
                _run(conn, sql, params)
            conn.execute("COMMIT")


def per_statement(conn: psycopg.Connection[Any], pid: int, clicks: list[list[Statement]]) -> None:
    """The same, with the backend's CPU read around each message (so not the client's)."""
    spent = dict.fromkeys(("BEGIN", *NAMES, "COMMIT"), 0.0)

    def timed(name: str, run: Callable[[], object]) -> None:
        before = process_cpu(pid)
        run()
        spent[name] += process_cpu(pid) - before

    for click in clicks:
        timed("BEGIN", partial(conn.execute, "BEGIN"))
        for name, (sql, params) in zip(NAMES, click, strict=True):
            timed(name, partial(_run, conn, sql, params))
        timed("COMMIT", partial(conn.execute, "COMMIT"))
    say("    of which, another " + str(len(clicks)) + " clicks:")
    for name, seconds in spent.items():
        say(f"    {name:40s} PostgreSQL {1000 * seconds / len(clicks):5.2f} ms")


def _run(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> None:
    conn.execute(sql, params).fetchall()


def one_message(conn: psycopg.Connection[Any], pid: int, clicks: list[list[Statement]]) -> None:
    cursor = psycopg.ClientCursor(conn)
    with measured(pid, "one message, parameters bound by the client", len(clicks)):
        for click in clicks:
            sql = ";\n".join(cursor.mogrify(s, p) for s, p in click)
            cursor.execute(f"BEGIN;\n{sql};\nCOMMIT")
            while True:
                if cursor.description is not None:
                    cursor.fetchall()
                if not cursor.nextset():
                    break


def pipelined(conn: psycopg.Connection[Any], pid: int, clicks: list[list[Statement]]) -> None:
    with measured(pid, "pipeline mode: six messages, one sync", len(clicks)):
        for click in clicks:
            with conn.pipeline():
                conn.execute("BEGIN")
                cursors = [conn.execute(sql, params) for sql, params in click]
                conn.execute("COMMIT")
            for cursor in cursors:
                cursor.fetchall()


def _pg_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, datetime.datetime):
        return "timestamptz"
    if isinstance(value, dict | list) or type(value).__name__ in ("Json", "Jsonb"):
        return "json"
    return "text"


def in_a_function(
    conn: psycopg.Connection[Any],
    pid: int,
    recorded: list[Statement],
    clicks: list[list[Statement]],
) -> None:
    """The four statements in one PL/pgSQL function, each statement's parameters its
    arguments (``a<statement>_<name>``), called once a click in autocommit."""
    arguments: list[tuple[int, str, str]] = []
    body = []
    for i, (sql, params) in enumerate(recorded):
        arguments += [(i, name, _pg_type(value)) for name, value in params.items()]
        text = re.sub(r"%\((\w+)\)s", lambda m, i=i: f"a{i}_{m.group(1)}", sql)
        body.append(text.replace("%%", "%") + " INTO r;")
    signature = ", ".join(f"a{i}_{name} {kind}" for i, name, kind in arguments)
    conn.execute(
        f"CREATE FUNCTION pg_temp.click({signature}) RETURNS void LANGUAGE plpgsql AS "
        f"$click$ DECLARE r record; BEGIN {' '.join(body)} END $click$"
    )
    call = "SELECT pg_temp.click(" + ", ".join(f"%s::{k}" for _, _, k in arguments) + ")"

    def value(click: list[Statement], i: int, name: str) -> Any:
        found = click[i][1][name]
        return psycopg.types.json.Json(found) if isinstance(found, dict | list) else found

    with measured(pid, "one call of a function of the four", len(clicks)):
        for click in clicks:
            conn.execute(call, [value(click, i, name) for i, name, _ in arguments]).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=1500)
    args = parser.parse_args()
    n = args.clicks
    home = Path(tempfile.mkdtemp(prefix="dispatcher-click-replay-"))
    with postgres() as url:
        population = prepare(settings_from(bench_env(home, url, "unused")), 5 * n + 100)
        statements = recorded_click(url, population.unsubscribe[0])
        ids = population.address_ids[1:]
        batches = [[for_address(statements, a) for a in ids[i * n : (i + 1) * n]] for i in range(5)]
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            pid = conn.info.backend_pid
            say(f"{n} first one-clicks each way, replayed on one connection (backend {pid})")
            round_trips(conn, pid, batches[0])
            per_statement(conn, pid, batches[1])
            one_message(conn, pid, batches[2])
            pipelined(conn, pid, batches[3])
            in_a_function(conn, pid, statements, batches[4])


if __name__ == "__main__":
    main()
