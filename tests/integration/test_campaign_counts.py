"""The campaign counters never drift from the rows (dispatcher/campaigns/counts.py), on
PostgreSQL with RabbitMQ and two worker processes.

A real campaign is sent while, from this process, people unsubscribe (the recipient pages'
function, which stops their queued rows), staff suppress others, the relay refuses some
recipients, the ledger is folded over and over, and a second campaign is cancelled in
flight and its unknown rows requeued. Afterwards the counters equal ``count(*)`` of the rows,
per status and skip reason, and the report the console shows reads the same numbers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns import counts
from dispatcher.campaigns.deliveries import stop_queued
from dispatcher.campaigns.services import (
    campaign_report,
    cancel_campaign,
    create_campaign,
    requeue_unknown,
    schedule_campaign,
)
from dispatcher.contacts.suppress import suppress_address
from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.models import Campaign, Delivery, DeliveryStatus
from suppression.models import Address, utcnow
from suppression.unsubscribe import unsubscribe_address
from tests.factories import bulk_contacts
from tests.support.backends import Backend, make_backend, require
from workers.process import WorkerProcess, wait_until

CONTACTS = 600


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    require("postgresql", "rabbitmq")
    with make_backend("postgres-rabbitmq", tmp_path / "var") as backend:
        yield backend


def _rows(session: Session, campaign_id: int) -> dict[str, int]:
    return {
        status: int(n)
        for status, n in session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.status)
        )
    }


def _campaign(sessions: sessionmaker[Session], backend: Backend, name: str) -> int:
    with session_scope(sessions) as session:
        campaign = create_campaign(
            session,
            backend.settings,
            name=name,
            subject="{{ greeting_name }}, new tracks",
            template="new-releases",
        )
        schedule_campaign(session, backend.settings, campaign.id)
        return campaign.id


def _status(sessions: sessionmaker[Session], campaign_id: int) -> str:
    with sessions() as session:
        return str(session.scalar(select(Campaign.status).where(Campaign.id == campaign_id)))


def test_counters_equal_the_rows_after_a_campaign_raced_by_unsubscribes_and_cancels(
    backend: Backend, smtp_sink, tmp_path: Path
) -> None:
    sessions = make_sessionmaker(make_engine(backend.settings.database_url))
    with session_scope(sessions) as session:
        bulk_contacts(session, CONTACTS, not_opted_in_every=17, suppressed_every=23)
    for i in range(0, CONTACTS, 29):  # the relay refuses these: failed, hard bounce
        smtp_sink.reject(f"r{i:06d}@example.com")
    # Small batches, paced, so the unsubscribes below land between claims of two workers.
    env = backend.env(mail_url=smtp_sink.url, batch_size="10", rate_per_second="300")
    stop_folding = threading.Event()

    def fold_all_the_time() -> None:
        # Everything folded at once (as if every row were old), racing the writers.
        while not stop_folding.is_set():
            with session_scope(sessions) as session:
                for (campaign_id,) in session.execute(select(Campaign.id)):
                    counts.fold(session, campaign_id, now=utcnow() + timedelta(hours=1))
            time.sleep(0.05)

    folder = threading.Thread(target=fold_all_the_time, daemon=True)
    with WorkerProcess(env, tmp_path / "worker.log", concurrency=2):
        folder.start()
        first = _campaign(sessions, backend, "raced")
        wait_until(lambda: _status(sessions, first) == "sending", 60, what="first sending")
        unsubscribed = 0
        for i in range(3, CONTACTS, 7):
            with session_scope(sessions) as session:
                address = session.scalar(
                    select(Address).where(Address.address == f"r{i:06d}@example.com")
                )
                assert address is not None
                if i % 2:
                    unsubscribe_address(
                        session, address, stop_queued=stop_queued, source="test:race"
                    )
                else:
                    suppress_address(
                        session, address.address, reason="postal_request", actor="staff@test"
                    )
            unsubscribed += 1
        second = _campaign(sessions, backend, "cancelled")
        wait_until(lambda: _rows_of(sessions, second).get("sent", 0) > 0, 60, what="second sends")
        with session_scope(sessions) as session:
            cancel_campaign(session, second, actor="staff@test")
        wait_until(lambda: _status(sessions, first) == "done", 180, what="first done")
        wait_until(lambda: not _rows_of(sessions, second).get("sending"), 60, what="second settled")
        # A crash's unknown rows, requeued by staff: the counters follow their old reasons.
        with session_scope(sessions) as session:
            session.execute(
                update(Delivery)
                .where(Delivery.campaign_id == first, Delivery.status == DeliveryStatus.FAILED)
                .values(status=DeliveryStatus.UNKNOWN.value, skip_reason="connection_lost")
            )
            moved = _rows(session, first).get("unknown", 0)
            counts.rebuild(session, first)  # the hand-made change above, counted
            assert requeue_unknown(session, first, actor="staff@test") == moved > 0
        wait_until(lambda: _status(sessions, first) == "done", 120, what="first done again")
        stop_folding.set()
        folder.join(timeout=10)

    assert unsubscribed > 50
    with sessions() as session:
        assert [str(m) for m in counts.verify(session)] == []
        for campaign_id in (first, second):
            report = campaign_report(session, campaign_id)
            rows = _rows(session, campaign_id)
            assert {k: v for k, v in report.by_status.items() if v} == rows
        first_rows = _rows(session, first)
        # The race happened: rows were stopped by unsubscribes and suppressed by the claim.
        assert campaign_report(session, first).by_reason
        assert first_rows.get("cancelled", 0) + first_rows.get("suppressed", 0) > 0
        assert _rows(session, second).get("cancelled", 0) > 0


def _rows_of(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, int]:
    with sessions() as session:
        return _rows(session, campaign_id)
