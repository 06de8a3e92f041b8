"""Shared steps of the fault-injection tests: a population, a campaign, the checks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.services import campaign_report, create_campaign, schedule_campaign
from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.models import Delivery
from dispatcher.settings import Settings
from suppression.models import Address
from tests.factories import bulk_contacts
from tests.support.smtp_sink import SmtpSink
from workers.process import wait_until

TERMINAL = {"sent", "failed", "suppressed", "cancelled", "unknown"}


def sessions_for(settings: Settings) -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(settings.database_url))


def populate(settings: Settings, count: int) -> set[str]:
    """``count`` contacts, 10% never opted in, 10% suppressed; returns the eligible ones."""
    with session_scope(sessions_for(settings)) as session:
        return bulk_contacts(session, count, not_opted_in_every=10, suppressed_every=10)


def start_campaign(settings: Settings, name: str = "fault test") -> int:
    with session_scope(sessions_for(settings)) as session:
        campaign = create_campaign(
            session,
            settings,
            name=name,
            subject="{{ greeting_name }}, new tracks",
            template="new-releases",
        )
        schedule_campaign(session, settings, campaign.id)
        return campaign.id


def status(settings: Settings, campaign_id: int) -> str:
    with session_scope(sessions_for(settings)) as session:
        return campaign_report(session, campaign_id).status


def wait_done(settings: Settings, campaign_id: int, timeout: float) -> None:
    wait_until(
        lambda: status(settings, campaign_id) == "done",
        timeout,
        interval=0.25,
        what=f"campaign {campaign_id} done",
    )


def delivery_statuses(settings: Settings, campaign_id: int) -> dict[str, str]:
    with session_scope(sessions_for(settings)) as session:
        rows = session.execute(
            select(Address.address, Delivery.status)
            .join(Address, Address.id == Delivery.address_id)
            .where(Delivery.campaign_id == campaign_id)
        ).all()
    return {address: state for address, state in rows}


def count_status(settings: Settings, campaign_id: int, state: str) -> int:
    with session_scope(sessions_for(settings)) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.campaign_id == campaign_id, Delivery.status == state)
            )
            or 0
        )


def assert_invariants(
    settings: Settings, campaign_id: int, sink: SmtpSink, eligible: set[str]
) -> Counter[str]:
    """Every row terminal; nobody twice; nobody ineligible; every arrival accounted for."""
    statuses = delivery_statuses(settings, campaign_id)
    assert set(statuses.values()) <= TERMINAL, Counter(statuses.values())
    received: Counter[str] = Counter()
    for message in sink.received():
        received.update(message.recipients)
    twice = {a: n for a, n in received.items() if n > 1}
    assert twice == {}, f"{len(twice)} addresses got more than one message"
    assert set(received) <= eligible, "a message reached a suppressed or non-consented address"
    for address in received:
        assert statuses[address] in ("sent", "unknown"), (address, statuses[address])
    for address, state in statuses.items():
        if state == "sent":
            assert received[address] == 1, f"{address} recorded sent but never arrived"
    return Counter(statuses.values())


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    wait_until(condition, timeout, interval=0.05, what=what)
