"""Messages built while the last one's replies are on their way: in row order, errors in
their place, never more than ``depth`` ahead (dispatcher/sending/prebuild.py)."""

from __future__ import annotations

import pytest

from dispatcher.sending.composing import ClaimedRow
from dispatcher.sending.messages import HeaderInjection
from dispatcher.sending.prebuild import BuiltWhileWaiting


class CountingFactory:
    """Builds ``message for <address>``; refuses the addresses in ``bad``."""

    def __init__(self, bad: frozenset[str] = frozenset()) -> None:
        self.bad = bad
        self.built: list[int] = []

    def envelope_from(self, row: ClaimedRow) -> str:
        return f"bounce+{row.delivery_id}@killertracks.com"

    def build(self, row: ClaimedRow) -> bytes:
        self.built.append(row.delivery_id)
        if row.address in self.bad:
            raise HeaderInjection("a line break in the name")
        return f"message for {row.address}".encode()


def rows(n: int, without_address: frozenset[int] = frozenset()) -> list[ClaimedRow]:
    return [
        ClaimedRow(i, i, i, None if i in without_address else f"r{i}@example.com", "N", "L")
        for i in range(n)
    ]


@pytest.mark.parametrize("waits", [0, 1, 3], ids=["never ahead", "one ahead", "three calls"])
def test_messages_come_in_row_order_with_build_errors_in_their_place(waits: int) -> None:
    """However often the transport calls ahead() (never: a maildir), the messages come in
    row order, each built once, a refused one raising for its own row only."""
    batch = rows(12, without_address=frozenset({3}))
    factory = CountingFactory(bad=frozenset({"r5@example.com"}))
    taken: list[object] = []
    with BuiltWhileWaiting(batch, factory) as built:  # type: ignore[arg-type]
        for row in batch:
            if row.address is None:
                continue  # the sender fails it without a message
            try:
                taken.append(built.take(row))
            except HeaderInjection:
                taken.append("refused")
            for _ in range(waits):
                built.ahead()
    expected: list[object] = [
        (f"bounce+{i}@killertracks.com", f"message for r{i}@example.com".encode())
        for i in range(12)
        if i != 3
    ]
    expected[4] = "refused"  # row 5
    assert taken == expected
    assert factory.built == [i for i in range(12) if i != 3]  # each once, none without address


def test_building_ahead_stops_at_its_depth_and_never_raises() -> None:
    batch = rows(10)
    factory = CountingFactory(bad=frozenset({"r1@example.com"}))
    with BuiltWhileWaiting(batch, factory, depth=2) as built:  # type: ignore[arg-type]
        for _ in range(5):
            built.ahead()  # row 1's refusal is kept for its take()
        assert factory.built == [0, 1]
        built.take(batch[0])
        built.ahead()
        assert factory.built == [0, 1, 2]
        with pytest.raises(HeaderInjection):
            built.take(batch[1])


def test_a_row_taken_out_of_order_is_refused() -> None:
    batch = rows(3)
    with BuiltWhileWaiting(batch, CountingFactory()) as built, pytest.raises(RuntimeError):  # type: ignore[arg-type]
        built.take(batch[1])
