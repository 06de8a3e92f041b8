"""Messages built ahead in a thread: in row order, errors in their place, and a batch that
stops early stops the builder (dispatcher/sending/prebuild.py)."""

from __future__ import annotations

import threading

import pytest

from dispatcher.sending.composing import ClaimedRow
from dispatcher.sending.messages import HeaderInjection
from dispatcher.sending.prebuild import DEPTH, Prebuilt


class CountingFactory:
    """Builds ``message for <address>``; refuses the addresses in ``bad``."""

    def __init__(self, bad: frozenset[str] = frozenset()) -> None:
        self.bad = bad
        self.built: list[int] = []
        self.threads: set[str] = set()

    def envelope_from(self, row: ClaimedRow) -> str:
        return f"bounce+{row.delivery_id}@killertracks.com"

    def build(self, row: ClaimedRow) -> bytes:
        self.threads.add(threading.current_thread().name)
        self.built.append(row.delivery_id)
        if row.address in self.bad:
            raise HeaderInjection("a line break in the name")
        return f"message for {row.address}".encode()


def rows(n: int, without_address: frozenset[int] = frozenset()) -> list[ClaimedRow]:
    return [
        ClaimedRow(i, i, i, None if i in without_address else f"r{i}@example.com", "N", "L")
        for i in range(n)
    ]


def test_messages_come_in_row_order_with_build_errors_in_their_place() -> None:
    batch = rows(12, without_address=frozenset({3}))
    factory = CountingFactory(bad=frozenset({"r5@example.com"}))
    taken: list[object] = []
    with Prebuilt(batch, factory) as built:  # type: ignore[arg-type]
        for row in batch:
            if row.address is None:
                continue  # the sender fails it without a message
            try:
                taken.append(built.take(row))
            except HeaderInjection:
                taken.append("refused")
    expected: list[object] = [
        (f"bounce+{i}@killertracks.com", f"message for r{i}@example.com".encode())
        for i in range(12)
        if i != 3
    ]
    expected[4] = "refused"  # row 5
    assert taken == expected
    assert factory.threads == {"message-builder"}


def test_a_batch_that_stops_early_stops_the_builder() -> None:
    batch = rows(200)
    factory = CountingFactory()
    with Prebuilt(batch, factory) as built:  # type: ignore[arg-type]
        built.take(batch[0])
        built.take(batch[1])
    # The builder is gone, and built no more than it could hold ahead of the sender.
    assert not any(t.name == "message-builder" for t in threading.enumerate())
    assert len(factory.built) <= 2 + DEPTH + 1


def test_a_row_taken_out_of_order_is_refused() -> None:
    batch = rows(3)
    with Prebuilt(batch, CountingFactory()) as built, pytest.raises(RuntimeError):  # type: ignore[arg-type]
        built.take(batch[1])
