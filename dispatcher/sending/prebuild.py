"""Building the next message while the current one is on the wire.

The sender spends a good part of a message's wall time waiting for the relay's replies. The
transport calls :meth:`BuiltWhileWaiting.ahead` once a message has gone and before its
replies are read, so the next message is signed, rendered and built (pure CPU: no database,
no network) during that round trip, in the sending thread itself. The sender keeps every
decision: it takes the messages in row order, and what it never takes is never sent.
Building ahead sends nothing; a message built for a row the sender then releases is only
wasted work.

A builder thread did this before; it held the interpreter lock while the replies waited to
be read, so the wire idled while it built (``bench/overlap.py`` compares the ways).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from types import TracebackType

from dispatcher.sending.composing import ClaimedRow, MessageFactory


class BuiltWhileWaiting:
    """The batch's messages, built in the sending thread: :meth:`ahead` while a message's
    replies are on their way, :meth:`take` (in row order) on the spot for what is not built
    yet. At most ``depth`` wait to be taken."""

    def __init__(self, rows: Sequence[ClaimedRow], factory: MessageFactory, depth: int = 2) -> None:
        self._rows = [row for row in rows if row.address is not None]
        self._factory = factory
        self._depth = depth
        self._built: collections.deque[tuple[str, bytes] | Exception] = collections.deque()
        self._next = 0  # the next row to build
        self._taken = 0  # the next row to take

    def __enter__(self) -> BuiltWhileWaiting:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._built.clear()

    def _build_next(self) -> None:
        row = self._rows[self._next]
        item: tuple[str, bytes] | Exception
        try:
            item = (self._factory.envelope_from(row), self._factory.build(row))
        except Exception as exc:  # handed to the sender with this row, which decides  # noqa: BLE001
            item = exc
        self._built.append(item)
        self._next += 1

    def ahead(self) -> None:
        """Build the next message unless ``depth`` are waiting already. Never raises for a
        message that cannot be built: :meth:`take` raises that for its row."""
        if self._next < len(self._rows) and self._next - self._taken < self._depth:
            self._build_next()

    def take(self, row: ClaimedRow) -> tuple[str, bytes]:
        """Envelope sender and message for ``row`` (the next row with an address), or the
        exception building it raised."""
        if self._taken >= len(self._rows) or self._rows[self._taken] is not row:
            raise RuntimeError("messages built out of order")  # a bug: send nothing more
        if self._taken == self._next:
            self._build_next()
        item = self._built.popleft()
        self._taken += 1
        if isinstance(item, Exception):
            raise item
        return item
