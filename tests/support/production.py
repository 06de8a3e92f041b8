"""The production recipe (``dispatcher web``: granian, ``dispatcher/web/production.py``) as a
process, for tests and benchmarks on 127.0.0.1; and what PostgreSQL says about connections
made to it."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
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
        """The server's worker processes (not multiprocessing's resource tracker)."""
        found: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").glob("*/children"):
            with suppress(OSError):
                found += [int(p) for p in task.read_text().split()]
        return [pid for pid in found if b"resource_tracker" not in _cmdline(pid)]

    def worker_cpu(self) -> float:
        """User + system CPU seconds of the worker processes so far."""
        total = 0.0
        for pid in self.worker_pids():
            with suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def command(port: int, workers: int = 1, threads: int | None = None) -> list[str]:
    """The README's production command line on 127.0.0.1:``port``."""
    shape = ["--workers", str(workers)] + (["--threads", str(threads)] if threads else [])
    return [str(BIN / "dispatcher"), "web", "--bind", f"127.0.0.1:{port}", *shape]


@contextmanager
def production(
    env: dict[str, str],
    port: int,
    *,
    app: str | None = None,
    workers: int = 1,
    threads: int = 4,
    log: Path | None = None,
    probe: str = "/healthz",
) -> Iterator[Server]:
    """``dispatcher web`` with ``workers`` processes of ``threads`` threads on
    127.0.0.1:``port``; ``env`` holds the DISPATCHER_* settings. ``app`` (a factory,
    ``module:function``) serves another app under the very same server settings."""
    if app is None:
        command_line = command(port, workers, threads)
    else:
        command_line = [str(BIN / "python"), "-c", _OTHER_APP, app, str(port), str(workers)]
        env = {**env, "DISPATCHER_WEB_THREADS": str(threads)}
    base = f"http://127.0.0.1:{port}"
    server: list[Server] = []

    def ready(process: subprocess.Popen[bytes]) -> bool:
        if not server:
            server.append(Server(base, process.pid, workers, threads))
        return len(server[0].worker_pids()) >= workers

    with started(command_line, env, base + probe, log, ready=ready):
        yield server[0]


@contextmanager
def started(
    command: list[str],
    env: dict[str, str],
    probe: str,
    log: Path | None = None,
    *,
    ready: Callable[[subprocess.Popen[bytes]], bool] = lambda _: True,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process (output to ``log``) until ``probe`` answers and ``ready`` says so;
    stopped with SIGTERM (and waited for) when the block ends. A server that exits first
    fails the wait with what it wrote."""
    out = log.open("wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            written = log.read_text(errors="replace") if log else ""
            assert process.poll() is None, f"the server exited:\n{written}"
            return answers(probe) and ready(process)

        wait_until(up, timeout=timeout, interval=0.05, what=f"{command[0]} answering {probe}")
        yield process
    finally:
        process.terminate()
        process.wait(30)
        if log:
            out.close()  # type: ignore[union-attr]


def answers(url: str) -> bool:
    """Whether ``url`` (on 127.0.0.1) answers 2xx now."""
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
            return True
    except OSError:
        return False


_OTHER_APP = """
import sys
from dispatcher.settings import load_settings
from dispatcher.web.production import recipe, serve
app, port, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = load_settings()
serve(settings, recipe(settings, bind=f"127.0.0.1:{port}", workers=workers), app)
"""


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
