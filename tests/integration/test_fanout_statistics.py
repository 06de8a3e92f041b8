"""A fan-out that grows ``deliveries`` a lot has PostgreSQL's statistics refreshed at once,
not a minute later by autovacuum: the recipients start clicking within seconds of the
first batch, and their statements are planned from those statistics (issue 18)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import fan_out, refresh_statistics
from dispatcher.db import make_engine, make_sessionmaker
from tests.support.backends import make_backend
from tests.unit.dispatcher.campaigns.test_fanout_window import due_campaign


@pytest.fixture
def pg_engine(tmp_path: Path) -> Iterator[Engine]:
    with make_backend("postgres-rabbitmq", tmp_path / "var") as backend:
        engine = make_engine(backend.settings.database_url)
        with engine.begin() as conn:  # only this test's statements analyze it
            conn.execute(text("ALTER TABLE deliveries SET (autovacuum_enabled = false)"))
        yield engine
        engine.dispose()


def believed_rows(engine: Engine) -> float:
    with engine.connect() as conn:
        return float(
            conn.scalar(text("SELECT reltuples FROM pg_class WHERE oid = 'deliveries'::regclass"))
        )


def test_a_fan_out_that_outgrows_the_statistics_analyzes_deliveries(pg_engine: Engine) -> None:
    sessions: sessionmaker[Session] = make_sessionmaker(pg_engine)
    assert believed_rows(pg_engine) <= 0  # never analyzed
    campaign_id = due_campaign(sessions, 300)
    assert len(list(fan_out(sessions, campaign_id, 100))) == 3
    assert believed_rows(pg_engine) == 300


def test_a_small_growth_leaves_the_statistics_to_autovacuum(pg_engine: Engine) -> None:
    sessions: sessionmaker[Session] = make_sessionmaker(pg_engine)
    list(fan_out(sessions, due_campaign(sessions, 300), 100))
    assert not refresh_statistics(sessions, 79)  # under 10 % of 300 + 50
    assert not refresh_statistics(sessions, 0)
    list(fan_out(sessions, due_campaign(sessions, 0), 100))  # 300 more rows, same contacts
    assert believed_rows(pg_engine) == 600
    assert refresh_statistics(sessions, 110)
