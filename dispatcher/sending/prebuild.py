"""Building the next messages while the current one is on the wire.

The sender spends most of a message's wall time waiting for the relay's replies. A builder
thread signs, renders and builds the batch's messages (pure CPU: no database, no network)
at most ``depth`` ahead of the sender, so that wait overlaps with useful work. The sender
keeps every decision: it takes the messages in row order, and what it never takes is never
sent. Building ahead sends nothing; a message built for a row the sender then releases is
only wasted work.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Sequence
from types import TracebackType

from dispatcher.sending.composing import ClaimedRow, MessageFactory

# Deep enough that the sender never waits for a message, shallow enough that little is
# built in vain when a batch stops early (connection lost, database away).
DEPTH = 4


class Prebuilt:
    """The batch's messages, built ahead in a thread; :meth:`take` returns them in order."""

    def __init__(
        self, rows: Sequence[ClaimedRow], factory: MessageFactory, depth: int = DEPTH
    ) -> None:
        self._rows = [row for row in rows if row.address is not None]
        self._factory = factory
        self._ready: queue.Queue[tuple[ClaimedRow, tuple[str, bytes] | BaseException]] = (
            queue.Queue(maxsize=depth)
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="message-builder", daemon=True)

    def __enter__(self) -> Prebuilt:
        if self._rows:
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a builder waiting for room
                self._ready.get_nowait()
            self._thread.join(0.05)

    def _run(self) -> None:
        for row in self._rows:
            item: tuple[str, bytes] | BaseException
            try:
                item = (self._factory.envelope_from(row), self._factory.build(row))
            except BaseException as exc:  # handed to the sender, which decides  # noqa: BLE001
                item = exc
            while not self._stop.is_set():
                try:
                    self._ready.put((row, item), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set():
                return

    def take(self, row: ClaimedRow) -> tuple[str, bytes]:
        """Envelope sender and message for ``row`` (the next row with an address), or the
        exception building it raised."""
        while True:
            try:
                built_for, item = self._ready.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._ready.empty():
                    raise RuntimeError("the message builder stopped") from None
        if built_for is not row:
            raise RuntimeError("messages built out of order")  # a bug: send nothing more
        if isinstance(item, BaseException):
            raise item
        return item
