"""A campaign published in a bounded window, through a real worker on SQLite (issue 13):
the broker never holds more than the window of a campaign's batches, everyone eligible gets
one message, and batches published more than once (a resume while they still wait) send once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import create_engine, text

from dispatcher.campaigns.fanout import fan_out
from tests.integration.faults import (
    assert_invariants,
    populate,
    sessions_for,
    start_campaign,
    status,
)
from tests.support.backends import Backend, make_backend
from tests.support.smtp_sink import SmtpSink
from workers.app import celery_config
from workers.process import WorkerProcess, wait_until

WINDOW = 3
BATCH = 5


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Backend]:
    with make_backend("sqlite", tmp_path / "var") as backend:
        yield backend


def worker(backend: Backend, sink: SmtpSink, log: Path) -> WorkerProcess:
    env = backend.env(mail_url=sink.url, batch_size=str(BATCH), batch_window=str(WINDOW))
    return WorkerProcess(env, log, pool="threads", concurrency=2)


def batches_waiting(backend: Backend) -> int:
    """``send_batch`` messages waiting in the broker (kombu's SQLAlchemy transport)."""
    engine = create_engine(backend.settings.broker_url.removeprefix("sqla+"))
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM kombu_message WHERE visible "
                        "AND payload LIKE '%workers.tasks.send_batch%'"
                    )
                ).scalar_one()
            )
    except Exception:  # noqa: BLE001 - the tables appear once the worker declared its queues
        return 0
    finally:
        engine.dispose()


def test_a_campaign_drains_through_a_bounded_window(
    embedded: Backend, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    eligible = populate(embedded.settings, 150)  # 150 rows: 30 batches, 10 windows' worth
    peak = 0
    with worker(embedded, smtp_sink, tmp_path / "worker.log"):
        campaign_id = start_campaign(embedded.settings)

        def done() -> bool:
            nonlocal peak
            peak = max(peak, batches_waiting(embedded))
            return status(embedded.settings, campaign_id) == "done"

        wait_until(done, 180, interval=0.02, what="campaign done")
    counts = assert_invariants(embedded.settings, campaign_id, smtp_sink, eligible)
    assert counts["sent"] == len(eligible)
    assert peak <= WINDOW, f"{peak} batches of one campaign waited in the broker"


def test_batches_published_twice_and_rewound_send_once(
    embedded: Backend, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """The first window is published twice, then the campaign is resumed (publishing
    restarts from the first queued row: a third copy) before any worker runs; the worker's
    two threads then take the same ranges at once. The claim gives each row to one."""
    eligible = populate(embedded.settings, 60)
    campaign_id = start_campaign(embedded.settings)
    sessions = sessions_for(embedded.settings)
    first = list(fan_out(sessions, campaign_id, BATCH, window=WINDOW))
    again = list(fan_out(sessions, campaign_id, BATCH, window=WINDOW, resume=True))
    assert again == first
    publisher = Celery("publisher", set_as_current=False)
    publisher.config_from_object(celery_config(embedded.settings))
    with publisher.connection_for_write() as connection:
        for first_id, last_id in first + first + again:
            publisher.send_task(
                "workers.tasks.send_batch",
                args=(campaign_id, first_id, last_id),
                queue=publisher.conf.task_default_queue,
                connection=connection,
            )
    with worker(embedded, smtp_sink, tmp_path / "worker.log"):
        wait_until(
            lambda: status(embedded.settings, campaign_id) == "done",
            180,
            interval=0.1,
            what="campaign done",
        )
    counts = assert_invariants(embedded.settings, campaign_id, smtp_sink, eligible)
    assert counts["sent"] == len(eligible)
