"""Per-stage timing of a batch, for the benchmark (off unless ``stage_timings`` names a file)."""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Stopwatch:
    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self.totals: defaultdict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.path is None:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - started

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
