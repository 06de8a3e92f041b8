"""Request counters in the database: a window's limit holds, a new window starts afresh."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dispatcher.signup import limits


def test_limit_holds_within_a_window_and_resets_after_it(session: Session) -> None:
    taken = [
        limits.take(session, "ip:x", limit=3, window_seconds=60, now=1000 + i) for i in range(5)
    ]
    assert taken == [True, True, True, False, False]
    # Refused requests do not push the window on: it ends 60 s after its first request.
    assert limits.take(session, "ip:x", limit=3, window_seconds=60, now=1060)
    assert limits.take(session, "ip:y", limit=3, window_seconds=60, now=1001)


def test_a_slot_given_back_can_be_taken_again(session: Session) -> None:
    assert limits.take(session, "mail:a", limit=1, window_seconds=86400, now=10)
    assert not limits.take(session, "mail:a", limit=1, window_seconds=86400, now=11)
    assert not limits.take(session, "mail:a", limit=1, window_seconds=86400, now=11)
    limits.give_back(session, "mail:a", limit=1)  # the one allowed mail could not go
    assert limits.take(session, "mail:a", limit=1, window_seconds=86400, now=12)
    assert not limits.take(session, "mail:a", limit=1, window_seconds=86400, now=13)


def test_prune_removes_only_old_windows(session: Session) -> None:
    limits.take(session, "old", limit=1, window_seconds=60, now=0)
    limits.take(session, "new", limit=1, window_seconds=60, now=1000)
    assert limits.prune(session, older_than_seconds=500, now=1000) == 1
    assert not limits.take(session, "new", limit=1, window_seconds=60, now=1001)
