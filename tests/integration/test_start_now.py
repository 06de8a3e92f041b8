"""Scheduling a campaign for now starts it at once, not at the beat's next tick: the CLI
(and the console) ask a worker to start due campaigns after the schedule is committed."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from dispatcher.campaigns.fleet import start_due_now
from dispatcher.campaigns.services import campaign_report, create_campaign
from dispatcher.db import make_engine, make_sessionmaker, session_scope
from tests.factories import make_contact
from tests.support.backends import Backend
from tests.support.smtp_sink import SmtpSink
from workers.cli import main
from workers.process import WorkerProcess, wait_until

ADDRESSES = [f"now{n}@example.com" for n in range(3)]


def test_a_campaign_scheduled_for_now_starts_without_waiting_for_the_beat(
    backend: Backend, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # The beat ticks once an hour here: only the nudge can start the campaign in time.
    env = backend.env(mail_url=smtp_sink.url, beat_interval_seconds="3600")
    sessions = make_sessionmaker(make_engine(backend.settings.database_url))
    with session_scope(sessions) as session:
        for address in ADDRESSES:
            make_contact(session, address)
        campaign_id = create_campaign(
            session, backend.settings, name="now", subject="New tracks", template="new-releases"
        ).id
    with WorkerProcess(env, tmp_path / "worker.log"):
        result = CliRunner().invoke(
            main, ["campaign", "schedule", str(campaign_id)], env=env, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stderr  # the broker took the request
        smtp_sink.wait_for_count(len(ADDRESSES), timeout=60)

        def done() -> bool:
            with session_scope(sessions) as session:
                return campaign_report(session, campaign_id).status == "done"

        wait_until(done, 60, what=f"campaign {campaign_id} done")
    assert sorted(r for m in smtp_sink.received() for r in m.recipients) == ADDRESSES


def test_a_broker_that_cannot_be_reached_only_leaves_it_to_the_beat(backend: Backend) -> None:
    unreachable = backend.settings.replace(broker_url="amqp://guest:guest@127.0.0.1:1//")
    assert start_due_now(unreachable, timeout=1.0) is False
    sessions = make_sessionmaker(make_engine(backend.settings.database_url))
    with session_scope(sessions) as session:
        make_contact(session, "later@example.com")
        campaign_id = create_campaign(
            session, backend.settings, name="n", subject="New tracks", template="new-releases"
        ).id
    env = backend.env(broker_url="amqp://guest:guest@127.0.0.1:1//")
    result = CliRunner().invoke(
        main, ["campaign", "schedule", str(campaign_id)], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0  # scheduled all the same, and staff are told
    assert "the beat starts it within" in result.stderr
    with session_scope(sessions) as session:
        assert campaign_report(session, campaign_id).status == "scheduled"
