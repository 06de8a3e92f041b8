"""Every campaign reaches a final state (ARCHITECTURE.md, invariant 10), on PostgreSQL.

Two workers record the last two batches of a campaign at the same moment, each in its own
transaction. The interleaving is forced, not hoped for: both write their rows and then decide
completion while the other's transaction is still open. A check that does not serialise on
the campaign row sees the other's rows still ``sending`` in both sessions, and the campaign
stays ``sending`` forever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.lifecycle import IllegalTransition, move
from dispatcher.campaigns.recovery import stalled_campaigns
from dispatcher.db import make_engine, make_sessionmaker, session_scope, upgrade
from dispatcher.models import Campaign, CampaignStatus, Delivery, DeliveryStatus
from dispatcher.sending.batch import BatchResult, _record
from tests.conftest import settings_for
from tests.factories import make_contact, make_sending_campaign
from tests.support.backends import postgres_database, require

WAIT = 120.0


@pytest.fixture
def pg_sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    require("postgresql")
    with postgres_database() as url:
        settings = settings_for(tmp_path / "var", database_url=url)
        upgrade(settings)
        engine = make_engine(url)
        try:
            yield make_sessionmaker(engine)
        finally:
            engine.dispose()


def _campaign_with_two_claimed_rows(sessions: sessionmaker[Session]) -> tuple[int, list[int]]:
    """A sending campaign whose two rows were claimed by two executions, one row each."""
    with session_scope(sessions) as session:
        make_contact(session, "one@example.com")
        make_contact(session, "two@example.com")
        campaign_id, ids = make_sending_campaign(session)
        for n, delivery_id in enumerate(ids):
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            delivery.status = DeliveryStatus.SENDING.value
            delivery.claim_token = f"token-{n}"
        return campaign_id, ids


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {WAIT:.0f} s: {what}")
        time.sleep(0.05)


def _status(sessions: sessionmaker[Session], campaign_id: int) -> str:
    with sessions() as session:
        status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    assert status is not None
    return status


def test_two_workers_finishing_the_last_two_batches_at_once_close_the_campaign(
    pg_sessions: sessionmaker[Session],
) -> None:
    campaign_id, ids = _campaign_with_two_claimed_rows(pg_sessions)
    both_recorded = threading.Barrier(2, timeout=WAIT)
    commit = threading.Event()
    decided = [threading.Event(), threading.Event()]
    pids: list[int] = [0, 0]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with pg_sessions() as session, session.begin():
                pids[n] = int(session.scalar(text("SELECT pg_backend_pid()")) or 0)
                # Each worker's own rows first (what _record does before deciding) ...
                session.execute(
                    text("UPDATE deliveries SET status = 'sent' WHERE id = :id"), {"id": ids[n]}
                )
                # ... and both have written before either decides.
                both_recorded.wait()
                _record(session, campaign_id, f"token-{n}", BatchResult(sent=[ids[n]]))
                decided[n].set()
                assert commit.wait(WAIT), "the test never let the worker commit"
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in (0, 1)]
    for thread in threads:
        thread.start()

    def blocked_on_a_lock(n: int) -> bool:
        with pg_sessions() as session:
            waiting = session.scalar(
                text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": pids[n]},
            )
        return waiting == "Lock"

    # Hold both transactions open until each worker has either decided or is queued behind
    # the other's lock: exactly the moment the old check went wrong.
    _wait_until(
        lambda: all(pids) and all(decided[n].is_set() or blocked_on_a_lock(n) for n in (0, 1)),
        "both workers decided or waiting on the campaign row",
    )
    commit.set()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), "a worker never finished"
    assert errors == []
    assert _status(pg_sessions, campaign_id) == "done"


def test_the_sweep_closes_a_sending_campaign_whose_rows_are_all_final(
    pg_sessions: sessionmaker[Session],
) -> None:
    campaign_id, ids = _campaign_with_two_claimed_rows(pg_sessions)
    with session_scope(pg_sessions) as session:
        # Rows made final behind the lifecycle's back (as a lost decision would leave them).
        session.execute(
            text("UPDATE deliveries SET status = 'sent' WHERE campaign_id = :c"),
            {"c": campaign_id},
        )
    assert _status(pg_sessions, campaign_id) == "sending"
    with session_scope(pg_sessions) as session:
        assert stalled_campaigns(session, lease_seconds=600, stall_seconds=600) == []
    assert _status(pg_sessions, campaign_id) == "done"


def test_two_staff_transitions_at_once_are_decided_one_after_the_other(
    pg_sessions: sessionmaker[Session],
) -> None:
    """Cancel and pause of the same sending campaign at the same moment: the lifecycle locks
    the row it decides on, so the pause waits for the cancel, sees 'cancelled' and is
    refused. Without the lock both read 'sending' and the pause overwrites the cancel."""
    campaign_id, _ = _campaign_with_two_claimed_rows(pg_sessions)
    cancelled = threading.Event()
    outcome: list[BaseException | str] = []
    pid: list[int] = []

    def pause() -> None:
        try:
            with pg_sessions() as session, session.begin():
                pid.append(int(session.scalar(text("SELECT pg_backend_pid()")) or 0))
                assert cancelled.wait(WAIT)
                move(session, campaign_id, CampaignStatus.PAUSED)
                outcome.append("paused")
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    with pg_sessions() as session, session.begin():
        move(session, campaign_id, CampaignStatus.CANCELLED)
        thread = threading.Thread(target=pause, daemon=True)
        thread.start()
        cancelled.set()

        def pause_waits_on_the_lock() -> bool:
            if not pid:
                return False
            with pg_sessions() as other:
                waiting = other.scalar(
                    text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": pid[0]},
                )
            return waiting == "Lock" or bool(outcome)

        _wait_until(pause_waits_on_the_lock, "the pause waiting for the cancel")
    thread.join(WAIT)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], IllegalTransition), outcome
    assert str(outcome[0]) == f"campaign {campaign_id} is cancelled; it cannot become paused"
    assert _status(pg_sessions, campaign_id) == "cancelled"
