"""Starting and stopping a real Celery worker process (the demo and the tests use it)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType


class WorkerFailed(RuntimeError):
    """The worker did not become ready or died; the message holds the end of its log."""


def wait_until(
    condition: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)


class WorkerProcess:
    """The worker (``python -m workers.worker``, as ``dispatcher worker`` runs it) as a child
    process, logging to ``log_path``.

    Readiness is read from the log (Celery's "ready." line), so ``loglevel`` must be info
    or more verbose.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        pool: str = "threads",
        concurrency: int = 2,
        beat: bool = True,
        loglevel: str = "info",
        queues: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.name = f"w{uuid.uuid4().hex[:8]}@%h"
        home = Path(self.env.get("DISPATCHER_HOME", "var"))
        self.argv = [
            sys.executable,
            "-m",
            "workers.worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            f"--hostname={self.name}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            *extra,
        ]
        if queues:
            self.argv.append(f"--queues={queues}")
        if beat:
            home.mkdir(parents=True, exist_ok=True)
            self.argv += ["--beat", f"--schedule={home / f'beat-{uuid.uuid4().hex[:6]}'}"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 120.0) -> WorkerProcess:
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A worker's log is for its operator only (it names campaigns, relays, errors).
        log = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        try:
            wait_until(self._ready, ready_timeout, what="worker ready")
        except TimeoutError:
            self.kill()
            raise WorkerFailed(f"worker did not start:\n{self.log_tail()}") from None
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise WorkerFailed(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
        return b" ready." in self.log_path.read_bytes()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM): the tasks in hand finish first."""
        if not self.alive:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the worker and every process it started: a crash, not a shutdown."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
