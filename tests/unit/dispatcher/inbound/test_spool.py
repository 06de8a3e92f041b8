"""The spool's drain: entries applied in order; with the database away it stops and keeps
everything for the next call; an entry that fails on its own account is set aside, kept
whole, and never holds back the unsubscribes spooled after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from dispatcher.inbound import spool


class Applier:
    """Records what it applied; raises ``errors[token]`` for the entry with that token."""

    def __init__(self, **errors: Exception) -> None:
        self.errors = errors
        self.applied: list[str] = []

    def __call__(self, payload: dict[str, Any], body: bytes) -> None:
        error = self.errors.get(payload["token"])
        if error is not None:
            raise error
        self.applied.append(payload["token"])


def spooled(root: Path, *tokens: str) -> list[Path]:
    return [spool.write(root, "one_click", {"token": t}) for t in tokens]


def test_an_entry_that_fails_is_set_aside_and_the_later_ones_are_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, _ = spooled(tmp_path, "t1", "t2")
    apply = Applier(t1=ValueError("ann@example.com cannot be stored"))

    assert spool.drain(tmp_path, apply) == 1

    assert apply.applied == ["t2"] and spool.pending(tmp_path) == 0
    aside = tmp_path / (first.name + ".bad")
    assert aside.read_bytes() == b'{"kind": "one_click", "token": "t1"}\n'
    assert [r.getMessage() for r in caplog.records] == [
        f"spool: entry {first.name} kept aside as {first.name}.bad (failed: ValueError)"
    ]
    assert spool.drain(tmp_path, apply) == 0  # nothing left to try again


def test_an_unreadable_entry_is_set_aside_the_same_way(tmp_path: Path) -> None:
    first, _ = spooled(tmp_path, "t1", "t2")
    first.write_bytes(b"not json\n")
    apply = Applier()

    assert spool.drain(tmp_path, apply) == 1

    assert apply.applied == ["t2"]
    assert (tmp_path / (first.name + ".bad")).read_bytes() == b"not json\n"


def test_with_the_database_away_everything_waits_for_the_next_drain(tmp_path: Path) -> None:
    spooled(tmp_path, "t1", "t2")
    away = Applier(t1=OperationalError("SELECT 1", {}, Exception("connection refused")))

    assert spool.drain(tmp_path, away) == 0

    assert spool.pending(tmp_path) == 2 and list(tmp_path.glob("*.bad")) == []
    back = Applier()
    assert spool.drain(tmp_path, back) == 2 and back.applied == ["t1", "t2"]
