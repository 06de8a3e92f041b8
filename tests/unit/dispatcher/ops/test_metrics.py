"""Metrics that need no worker: queue depth from the database, unsubscribes from the app."""

from __future__ import annotations

import os

from flask.testing import FlaskClient
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import create_deliveries
from dispatcher.db import session_scope
from dispatcher.models import Campaign
from dispatcher.ops import metrics
from dispatcher.settings import Settings
from dispatcher.web import create_app
from suppression.tokens import LinkPurpose
from tests.factories import make_contact
from tests.unit.dispatcher.web.conftest import contact_id  # noqa: F401 - fixture
from tests.unit.dispatcher.web.pages import link


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_queue_depth_per_campaign_comes_from_its_counters(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        for i in range(3):
            make_contact(session, f"q{i}@example.com")
        campaign = Campaign(
            name="n", subject="s", template="new-releases", purpose="marketing", status="sending"
        )
        session.add(campaign)
        session.flush()
        create_deliveries(session, campaign)
        campaign_id = campaign.id
    text = generate_latest(metrics.registry(settings, session_factory)).decode()
    found = samples(text)
    labels = (("campaign", str(campaign_id)), ("purpose", "marketing"))
    assert found[("dispatcher_queued_messages", labels)] == 3
    assert found[("dispatcher_oldest_queued_seconds", labels)] >= 0


def test_one_click_unsubscribe_is_counted_once(
    settings: Settings,
    contact_id: int,  # noqa: F811 - the web tests' fixture
) -> None:
    client: FlaskClient = create_app(settings).test_client()
    url = link(settings, LinkPurpose.UNSUBSCRIBE, contact_id)

    def count() -> float:
        return (
            REGISTRY.get_sample_value("dispatcher_unsubscribes_total", {"source": "one_click"})
            or 0.0
        )

    before = count()
    for _ in range(3):  # providers retry; only the first changes anything
        assert client.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert count() == before + 1


def test_multiprocess_env_gives_each_process_its_own_folder(settings: Settings) -> None:
    """Two workers under one home keep their own files; a gone process's folder is removed."""
    import subprocess

    root = settings.home / "metrics" / "worker"
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        for pid in (gone.pid, alive.pid):
            (root / str(pid)).mkdir(parents=True)
            (root / str(pid) / "counter_1.db").write_bytes(b"theirs")
        (root / "counter_9.db").write_bytes(b"old layout")
        env = metrics.multiprocess_env(settings, "worker")
        mine = root / str(os.getpid())
        assert env == {metrics.MULTIPROC_ENV: str(mine)}
        assert sorted(p.name for p in root.iterdir()) == sorted([str(alive.pid), mine.name])
        assert (root / str(alive.pid) / "counter_1.db").read_bytes() == b"theirs"
        (mine / "counter_1.db").write_bytes(b"mine, from before a restart")
        metrics.multiprocess_env(settings, "worker")
        assert list(mine.iterdir()) == [] and oct(mine.stat().st_mode & 0o777) == "0o700"
    finally:
        alive.kill()
        alive.wait()


def test_campaigns_in_trouble_are_metrics_like_campaign_status_says(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    from dispatcher.campaigns.problems import record_task_error, resolve_task_errors
    from dispatcher.sending.transports import RelayLoginRefused

    with session_scope(session_factory) as session:
        campaign = Campaign(
            name="n", subject="s", template="new-releases", purpose="marketing", status="sending"
        )
        session.add(campaign)
        session.flush()
        campaign_id = campaign.id
        said = record_task_error(
            session, campaign_id, "send_batch", RelayLoginRefused("refused"), 1, 5
        )

    def found() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return samples(generate_latest(metrics.registry(settings, session_factory)).decode())

    errors = (
        "dispatcher_campaign_task_errors",
        (("campaign", str(campaign_id)), ("code", said.code)),
    )
    trouble = (
        "dispatcher_campaign_in_trouble",
        (("campaign", str(campaign_id)), ("kind", "errors")),
    )
    assert found()[errors] == 1 and found()[trouble] == 1
    with session_scope(session_factory) as session:
        resolve_task_errors(session, campaign_id, ("send_batch",), 1)
    assert errors not in found() and trouble not in found()


def test_what_came_back_is_counted_from_the_rows(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    from sqlalchemy import update

    from dispatcher.models import Delivery, InboundMessage

    with session_scope(session_factory) as session:
        for i in range(2):
            make_contact(session, f"f{i}@example.com")
        campaign = Campaign(
            name="n", subject="s", template="new-releases", purpose="marketing", status="sending"
        )
        session.add(campaign)
        session.flush()
        create_deliveries(session, campaign)
        session.execute(update(Delivery).values(status="sent", feedback="hard_bounce"))
        for key, kind, outcome in (
            ("a", "hard_bounce", "applied"),
            ("b", "hard_bounce", "applied"),
            ("c", "complaint", "unmatched"),
        ):
            session.add(InboundMessage(key=key, source="file", kind=kind, outcome=outcome))
        campaign_id = campaign.id
    found = samples(generate_latest(metrics.registry(settings, session_factory)).decode())
    hard = (("kind", "hard_bounce"), ("outcome", "applied"))
    assert found[("dispatcher_inbound_reports", hard)] == 2
    forged = (("kind", "complaint"), ("outcome", "unmatched"))
    assert found[("dispatcher_inbound_reports", forged)] == 1
    per_campaign = (("campaign", str(campaign_id)), ("kind", "hard_bounce"))
    assert found[("dispatcher_delivery_feedback", per_campaign)] == 2
