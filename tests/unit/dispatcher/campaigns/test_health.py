"""A campaign's health: overdue, which process is missing, queued work nobody consumes."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import fan_out
from dispatcher.campaigns.fleet import BEAT, WORKER, Fleet, write_heartbeat
from dispatcher.campaigns.health import campaign_health, campaigns_in_trouble
from dispatcher.campaigns.problems import SEND_BATCH, record_task_error
from dispatcher.campaigns.services import cancel_campaign, create_campaign, schedule_campaign
from dispatcher.db import session_scope
from dispatcher.models import Heartbeat
from dispatcher.sending.transports import RelayLoginRefused
from dispatcher.settings import Settings
from suppression.models import utcnow
from tests.factories import make_contact


def scheduled(session: Session, settings: Settings, minutes_ago: float) -> int:
    campaign = create_campaign(session, settings, name="c", subject="s", template="new-releases")
    schedule_campaign(session, settings, campaign.id, at=utcnow() - timedelta(minutes=minutes_ago))
    return campaign.id


def codes(session: Session, settings: Settings, campaign_id: int, fleet: Fleet | None) -> list[str]:
    health = campaign_health(session, settings, campaign_id, fleet=fleet)
    return [p.code for p in health.problems]


def test_on_time_campaign_is_fine_and_a_late_one_says_why(
    session: Session, settings: Settings
) -> None:
    fine = scheduled(session, settings, minutes_ago=0)
    late = scheduled(session, settings, minutes_ago=60)
    assert codes(session, settings, fine, None) == []
    assert codes(session, settings, late, None) == ["overdue", "no_beat"]
    assert campaigns_in_trouble(session, settings) == {late: "overdue"}

    write_heartbeat(session, BEAT, "beat@here")
    nobody = Fleet(utcnow(), consumers={"w@elsewhere": ("another-queue",)})
    health = campaign_health(session, settings, late, fleet=nobody)
    assert [p.code for p in health.problems] == ["overdue", "no_worker"]
    assert "likely cause: no worker consumes its queue" in health.problems[0].message
    assert health.beat_fresh and health.workers == []

    down = Fleet(utcnow(), broker_problem="cannot reach the broker: check DISPATCHER_BROKER_URL")
    assert codes(session, settings, late, down) == ["overdue", "broker_unreachable"]

    everyone = Fleet(utcnow(), consumers={"w@here": ("dispatch", "dispatch.notices")})
    health = campaign_health(session, settings, late, fleet=everyone)
    assert [p.code for p in health.problems] == ["overdue"]
    assert "likely cause: not known" in health.problems[0].message


def test_a_stale_beat_is_a_missing_beat(session: Session, settings: Settings) -> None:
    late = scheduled(session, settings, minutes_ago=60)
    write_heartbeat(session, BEAT, "beat@here")
    session.execute(update(Heartbeat).values(seen_at=utcnow() - timedelta(minutes=10)))
    health = campaign_health(session, settings, late)
    assert [p.code for p in health.problems] == ["overdue", "no_beat"]
    assert "no beat has been seen since" in health.problems[1].message


def test_queued_rows_and_no_worker_heartbeat_on_the_queue(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with session_scope(session_factory) as session:
        for i in range(3):
            make_contact(session, f"q{i}@example.com")
        campaign_id = scheduled(session, settings, minutes_ago=0)
    assert len(list(fan_out(session_factory, campaign_id, 2))) == 2
    no_broadcast = Fleet(utcnow())  # the embedded broker: workers' heartbeats tell
    with session_scope(session_factory) as session:
        health = campaign_health(session, settings, campaign_id, fleet=no_broadcast)
        assert [p.message for p in health.problems] == [
            "3 messages are queued and no worker consumes queue 'dispatch': "
            "start `dispatcher worker` (one that consumes 'dispatch')"
        ]
        write_heartbeat(session, WORKER, "w@here", detail="dispatch,dispatch.notices")
        health = campaign_health(session, settings, campaign_id, fleet=no_broadcast)
        assert health.ok and health.workers == ["w@here"]
        assert health.workers_checked_by == "heartbeats"
        record_task_error(session, campaign_id, SEND_BATCH, RelayLoginRefused("x"), 1, 2)
        health = campaign_health(session, settings, campaign_id, fleet=no_broadcast)
        assert [(p.code, p.tasks) for p in health.problems] == [("smtp_login_refused", 1)]
        assert campaigns_in_trouble(session, settings) == {campaign_id: "errors"}
        cancel_campaign(session, campaign_id, actor="staff")
        assert campaigns_in_trouble(session, settings) == {}  # its errors are history now
