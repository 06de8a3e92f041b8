"""Page hits counted in process memory and written to the audit trail in batches.

A link scanner fetches every link of every message within seconds of delivery, so the
unsubscribe and preference pages get thousands of GETs a second during a send. A GET changes
nothing; writing its audit row in the request made every page view a database write and a
commit. Here a page's hit is counted in this process under its fold key (the act, the link,
IP, browser and the 10-minute window, :func:`suppression.events.fold_key`) and written by a
daemon thread at most :data:`FLUSH_SECONDS` later, or sooner when :data:`FLUSH_BOUND` keys
are waiting: one row per key with its count, first seen (``occurred_at``) and last seen
(``last_at``); a key already written raises that row's count. The security log still says
who (IP, browser), when and how often.

What is never buffered: any POST, any change, any refusal. Those are written in the request,
with the change they describe.

A clean stop (``dispatcher web``'s graceful shutdown, ``dispatcher serve`` ending, the
interpreter exiting) writes what is waiting (:func:`flush_all` runs at exit). A crash of the process
(SIGKILL, power loss) loses the page views of its last :data:`FLUSH_SECONDS` at most, never
an unsubscribe or a preference change. A flush that fails (the database away) keeps its hits
and is tried again on the next round; past :data:`MAX_WAITING` keys the oldest waiting hits
are dropped and the drop is logged with its count.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from dispatcher.db import session_scope
from suppression.events import counted_row, record_counted

log = logging.getLogger(__name__)

# A page hit is in the audit trail at most this many seconds after it happened.
FLUSH_SECONDS = 1.0
# ... or as soon as this many keys wait (one batch statement writes them).
FLUSH_BOUND = 2000
# With the database away, hits wait; beyond this many keys the oldest are dropped (logged).
MAX_WAITING = 200_000

_LIVE: weakref.WeakSet[HitCounter] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_AT_EXIT = False


class _Waiting:
    """One fold key's hits so far: the first hit's row, how many, the last one's time."""

    __slots__ = ("row", "times", "last_at")

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.times = 1
        self.last_at: datetime = row["occurred_at"]


class HitCounter:
    """Counts folding page hits (:func:`suppression.events.event_row` values with a
    ``fold_key``) and writes them in batches with ``sessions``."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        *,
        every: float = FLUSH_SECONDS,
        bound: int = FLUSH_BOUND,
    ) -> None:
        self.sessions = sessions
        self.every = every
        self.bound = bound
        self._waiting: dict[str, _Waiting] = {}
        self._lock = threading.Lock()  # guards _waiting
        self._flushing = threading.Lock()  # one flush at a time, in hit order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        global _AT_EXIT
        with _LIVE_LOCK:
            _LIVE.add(self)
            if not _AT_EXIT:
                atexit.register(flush_all)
                _AT_EXIT = True

    def add(self, row: dict[str, Any]) -> None:
        """Count one hit; written by the next flush."""
        key = row["fold_key"]
        if key is None:
            raise ValueError("only a folding hit is counted")
        with self._lock:
            waiting = self._waiting.get(key)
            if waiting is None:
                self._waiting[key] = _Waiting(row)
                size = len(self._waiting)
            else:
                waiting.times += 1
                waiting.last_at = row["occurred_at"]
                return
        if self._thread is None:
            self._start()
        if size >= self.bound:
            self._wake.set()

    def waiting(self) -> int:
        """How many hits are counted and not yet written."""
        with self._lock:
            return sum(w.times for w in self._waiting.values())

    def flush(self) -> int:
        """Write what is waiting, one statement; returns how many hits it wrote. A failure
        puts the hits back (counted in with any that came meanwhile) and raises."""
        with self._flushing:
            with self._lock:
                taken, self._waiting = self._waiting, {}
            if not taken:
                return 0
            # In key order: two processes writing rows of the same keys lock them in the
            # same order, so they cannot deadlock.
            rows = [
                counted_row(w.row, w.times, w.last_at)
                for _, w in sorted(taken.items(), key=lambda item: item[0])
            ]
            try:
                with session_scope(self.sessions) as session:  # type: ignore[arg-type]
                    record_counted(session, rows)
            except BaseException:
                self._put_back(taken)
                raise
            return sum(w.times for w in taken.values())

    def _put_back(self, taken: dict[str, _Waiting]) -> None:
        with self._lock:
            merged = taken  # the older hits first
            for key, new in self._waiting.items():
                old = merged.get(key)
                if old is None:
                    merged[key] = new
                else:
                    old.times += new.times
                    old.last_at = new.last_at
            excess = len(merged) - MAX_WAITING
            if excess > 0:
                lost = sum(merged.pop(k).times for k in list(merged)[:excess])
                log.error("page hits: %d dropped unwritten, the database has been away", lost)
            self._waiting = merged

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            # The thread holds the counter weakly: a counter nobody holds (an app a test
            # made and dropped) ends its thread instead of living on with it.
            self._thread = threading.Thread(
                target=_run, args=(weakref.ref(self),), name="page-hits", daemon=True
            )
        self._thread.start()

    def _round(self) -> bool:
        """Wait for the next round and write; False once the counter is closed."""
        self._wake.wait(self.every)
        self._wake.clear()
        try:
            self.flush()
        except Exception:  # kept; tried again next round
            log.warning("page hits: could not write them yet", exc_info=True)
        return not self._stop.is_set()

    def close(self) -> None:
        """Stop the thread and write what waits (a clean shutdown loses no hit)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self.flush()


def _run(counter: weakref.ref[HitCounter]) -> None:
    while True:
        alive = counter()
        if alive is None or not alive._round():
            return
        del alive


def flush_all() -> None:
    """Write every live counter's waiting hits (at exit; tests before reading the trail)."""
    with _LIVE_LOCK:
        counters = list(_LIVE)
    for counter in counters:
        try:
            counter.flush()
        except Exception as exc:
            log.error("page hits: %d could not be written at exit: %s", counter.waiting(), exc)
