"""The production recipe (gunicorn with ``dispatcher/web/gunicorn_conf.py``) as a process, for
tests and benchmarks on 127.0.0.1; and what PostgreSQL says about connections made to it."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from workers.process import wait_until

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class Server:
    base: str
    pid: int
    workers: int
    threads: int

    def worker_pids(self) -> list[int]:
        found: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").glob("*/children"):
            with suppress(OSError):
                found += [int(p) for p in task.read_text().split()]
        return found

    def worker_cpu(self) -> float:
        """User + system CPU seconds of the worker processes so far."""
        total = 0.0
        for pid in self.worker_pids():
            with suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total


@contextmanager
def gunicorn(
    env: dict[str, str],
    port: int,
    *,
    app: str = "dispatcher.web:create_app()",
    workers: int = 1,
    threads: int = 16,
    log: Path | None = None,
    probe: str = "/healthz",
) -> Iterator[Server]:
    """``gunicorn -c python:dispatcher.web.gunicorn_conf APP`` with ``workers`` processes
    of ``threads`` threads on 127.0.0.1:``port``; ``env`` holds the DISPATCHER_* settings."""
    env = {
        **env,
        "DISPATCHER_WEB_BIND": f"127.0.0.1:{port}",
        "DISPATCHER_WEB_WORKERS": str(workers),
        "DISPATCHER_WEB_THREADS": str(threads),
    }
    command = [str(BIN / "gunicorn"), "-c", "python:dispatcher.web.gunicorn_conf", app]
    out = log.open("wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    server = Server(base, process.pid, workers, threads)
    try:
        wait_until(
            lambda: _answers(base + probe, process) and len(server.worker_pids()) >= workers,
            timeout=60,
            interval=0.1,
            what=f"gunicorn answering on port {port}",
        )
        yield server
    finally:
        process.terminate()
        process.wait(30)
        if log:
            out.close()  # type: ignore[union-attr]


def _answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "gunicorn exited"
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
            return True
    except OSError:
        return False


def sessions_opened(admin_url: str, database: str) -> int:
    """How many sessions PostgreSQL has opened to ``database`` so far (pg_stat_database;
    a session is counted when it starts, and reported at the latest when it ends)."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            value = conn.execute(
                text("SELECT sessions FROM pg_stat_database WHERE datname = :d"), {"d": database}
            ).scalar_one()
            return int(value or 0)
    finally:
        engine.dispose()
