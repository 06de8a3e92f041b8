"""The fan-out adds a campaign's rows a range of contacts at a time while its first batches
send (issue 13), on PostgreSQL, where transactions really overlap: the unit tests of the
ranges run here again, and two interleavings are forced, not hoped for. A range being added
holds the campaign row ``FOR KEY SHARE`` (as the rows' foreign-key checks do): a worker
closing its batch (``finish_if_done``) and a refill moving the published mark do not wait
for it, while a cancel waits and then cancels the range's rows too.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import _sending_for_fan_out, add_deliveries
from dispatcher.campaigns.lifecycle import finish_if_done
from dispatcher.campaigns.services import cancel_campaign
from dispatcher.db import session_scope
from tests.integration.test_campaign_completion import WAIT, _wait_until
from tests.integration.test_campaign_completion import pg_sessions as session_factory  # noqa: F401
from tests.unit.dispatcher.campaigns.test_fanout_window import (  # noqa: F401 - collected again
    by_status,
    due_campaign,
    rows_and_flag,
    test_a_campaign_is_not_finished_while_its_fan_out_is_adding_rows,
    test_a_cancel_during_the_fan_out_leaves_no_row_queued_and_adds_none_after_it,
    test_a_failed_publish_while_ranges_remain_does_not_stop_the_fan_out,
    test_a_fan_out_that_died_half_way_is_found_stalled_and_its_retry_adds_the_rest,
    test_a_pause_stops_the_fan_out_and_resuming_adds_the_rest,
    test_the_first_batches_are_published_before_the_fan_out_has_added_every_row,
)


def fanning_out(sessions: sessionmaker[Session], contacts: int) -> int:
    """A campaign to ``contacts`` new contacts, started, its fan-out under way (no rows)."""
    campaign_id = due_campaign(sessions, contacts)
    with session_scope(sessions) as session:
        session.execute(
            text("UPDATE campaigns SET status = 'sending', fanning_out = true WHERE id = :c"),
            {"c": campaign_id},
        )
    return campaign_id


def started_with_a_range_open(
    sessions: sessionmaker[Session], contacts: int
) -> tuple[int, Session]:
    """A sending campaign whose fan-out is adding its first range: the range's transaction
    (returned, still open) holds the campaign row and its rows are not committed."""
    campaign_id = fanning_out(sessions, contacts)
    adding = sessions()
    adding.begin()
    campaign = _sending_for_fan_out(adding, campaign_id)
    assert campaign is not None
    assert add_deliveries(adding, campaign, 0, 10**9) == contacts
    return campaign_id, adding


def test_a_workers_closing_check_and_a_refill_do_not_wait_for_a_range_being_added(
    session_factory: sessionmaker[Session],  # noqa: F811
) -> None:
    campaign_id, adding = started_with_a_range_open(session_factory, 20)
    try:
        with session_factory() as worker, worker.begin():
            worker.execute(text("SET LOCAL lock_timeout = '5s'"))
            # FOR UPDATE here waited for the range's commit (LockNotAvailable after 5 s).
            assert finish_if_done(worker, campaign_id) is False
            worker.execute(
                text("UPDATE campaigns SET published_through = 1 WHERE id = :c"),
                {"c": campaign_id},
            )
    except OperationalError as exc:  # pragma: no cover - the failure this test is for
        pytest.fail(f"the worker waited for the fan-out's range: {exc}")
    finally:
        adding.rollback()
        adding.close()


def test_a_cancel_waits_for_the_range_being_added_and_cancels_its_rows(
    session_factory: sessionmaker[Session],  # noqa: F811
) -> None:
    campaign_id, adding = started_with_a_range_open(session_factory, 20)
    pid = int(adding.scalar(text("SELECT pg_backend_pid()")) or 0)
    cancelling: list[int] = []
    dropped: list[int] = []
    errors: list[BaseException] = []

    def cancel() -> None:
        try:
            with session_scope(session_factory) as session:
                cancelling.append(int(session.scalar(text("SELECT pg_backend_pid()")) or 0))
                dropped.append(cancel_campaign(session, campaign_id))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()

    def cancel_waits_for_the_range() -> bool:
        with session_factory() as session:
            blockers = (
                session.scalar(text("SELECT pg_blocking_pids(:pid)"), {"pid": cancelling[0]})
                if cancelling
                else None
            )
        return bool(blockers) and pid in blockers

    try:
        _wait_until(cancel_waits_for_the_range, "the cancel waiting for the range's transaction")
    finally:
        adding.commit()
        adding.close()
    thread.join(WAIT)
    assert not thread.is_alive() and errors == []
    assert dropped == [20]
    assert by_status(session_factory, campaign_id) == {"cancelled": 20}
    assert rows_and_flag(session_factory, campaign_id) == (20, True, "cancelled")


def test_a_range_that_waited_for_a_cancel_adds_no_row(
    session_factory: sessionmaker[Session],  # noqa: F811
) -> None:
    """The cancel holds the campaign row when the next range starts: the range waits for it,
    then sees the campaign cancelled and adds nothing (read without the lock, the status was
    still ``sending``, and its rows would have stayed queued in a cancelled campaign)."""
    campaign_id = fanning_out(session_factory, 20)
    cancelling = session_factory()
    cancelling.begin()
    pid = int(cancelling.scalar(text("SELECT pg_backend_pid()")) or 0)
    assert cancel_campaign(cancelling, campaign_id) == 0
    ranging: list[int] = []
    added: list[int | None] = []
    errors: list[BaseException] = []

    def next_range() -> None:
        try:
            with session_scope(session_factory) as session:
                ranging.append(int(session.scalar(text("SELECT pg_backend_pid()")) or 0))
                campaign = _sending_for_fan_out(session, campaign_id)
                added.append(None if campaign is None else add_deliveries(session, campaign, 0, 99))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=next_range, daemon=True)
    thread.start()

    def range_waits_for_the_cancel() -> bool:
        if not ranging:
            return False
        with session_factory() as session:
            blockers = session.scalar(text("SELECT pg_blocking_pids(:pid)"), {"pid": ranging[0]})
        return pid in (blockers or [])

    try:
        _wait_until(range_waits_for_the_cancel, "the range waiting for the cancel's transaction")
    finally:
        cancelling.commit()
        cancelling.close()
    thread.join(WAIT)
    assert not thread.is_alive() and errors == []
    assert added == [None]
    assert rows_and_flag(session_factory, campaign_id) == (0, True, "cancelled")
