"""Per-stage timing of a batch, for the benchmark (off unless ``stage_timings`` names a file)."""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

_OFF: AbstractContextManager[None] = nullcontext()


class _Timed:
    __slots__ = ("name", "started", "totals")

    def __init__(self, totals: defaultdict[str, float], name: str) -> None:
        self.totals = totals
        self.name = name
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.totals[self.name] += time.perf_counter() - self.started


class Stopwatch:
    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self.totals: defaultdict[str, float] = defaultdict(float)

    def stage(self, name: str) -> AbstractContextManager[None]:
        """Times what runs inside, under ``name`` (four stages a message: kept cheap)."""
        if self.path is None:
            return _OFF
        return _Timed(self.totals, name)

    def write(self, messages: int) -> None:
        """Append this batch's totals as one JSON line (O_APPEND: safe across processes)."""
        if self.path is None:
            return
        line = json.dumps({"messages": messages, **self.totals}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
