"""Retention removes exactly what is older than each window."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.models import AffiliateRelease, AffiliateShare
from dispatcher.privacy.retention import apply_retention
from dispatcher.settings import Settings
from dispatcher.sharing.affiliates import add_affiliate
from dispatcher.sharing.export import export
from suppression.models import ConsentStatus, Event, utcnow
from tests.factories import make_contact


@given(ages=st.lists(st.integers(0, 200), min_size=1, max_size=20), window=st.integers(1, 150))
@hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_hits_keep_ip_and_browser_exactly_for_the_window(
    settings: Settings, session_factory: sessionmaker[Session], ages: list[int], window: int
) -> None:
    now = utcnow()
    with session_scope(session_factory) as session:
        session.execute(delete(Event))
        for i, age in enumerate(ages):
            # Half a day either side of the cut, so "older than the window" is unambiguous.
            at = now - timedelta(days=age, hours=12 if age >= window else -12 if age else 0)
            session.add(Event(kind="web_hit", occurred_at=at, ip=f"192.0.2.{i}", user_agent="UA"))
            session.add(Event(kind="staff_sign_in", occurred_at=at, ip="10.0.0.1", user_agent="UA"))
    configured = settings.replace(retention_hit_days=float(window))
    with session_scope(session_factory) as session:
        dry = apply_retention(session, configured, now=now, dry_run=True)
    with session_scope(session_factory) as session:
        report = apply_retention(session, configured, now=now)
    expected = sum(1 for a in ages if a >= window)
    assert dry.hits_anonymised == report.hits_anonymised == expected
    with session_scope(session_factory) as session:
        kept = session.scalars(
            select(Event.ip).where(Event.kind == "web_hit", Event.ip.is_not(None))
        )
        assert len(list(kept)) == len(ages) - expected
        staff = session.scalars(select(Event.ip).where(Event.kind == "staff_sign_in"))
        assert all(ip == "10.0.0.1" for ip in staff)


def test_old_export_files_and_shares_go(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with session_scope(session_factory) as session:
        make_contact(session, "a@example.org", affiliates=ConsentStatus.OPTED_IN)
        add_affiliate(session, "partner", contact="p@partner.example", fields="email", actor="a")
    old = export(session_factory, settings, "partner", actor="a", out=tmp_path / "old.csv")
    new = export(session_factory, settings, "partner", actor="a", out=tmp_path / "new.csv")
    with session_scope(session_factory) as session:
        release = session.get(AffiliateRelease, old.release_id)
        assert release is not None
        release.created_at = utcnow() - timedelta(days=40)
    with session_scope(session_factory) as session:
        report = apply_retention(session, settings)
    assert report.export_files_removed == 1 and report.shares_removed == 0
    assert not old.path.exists() and new.path.exists()
    with session_scope(session_factory) as session:
        assert session.get(AffiliateRelease, old.release_id).path is None  # type: ignore[union-attr]
        for release_id in (old.release_id, new.release_id):
            session.get(AffiliateRelease, release_id).created_at = utcnow() - timedelta(days=800)  # type: ignore[union-attr]
    with session_scope(session_factory) as session:
        report = apply_retention(session, settings)
        assert report.shares_removed == 1 and report.export_files_removed == 1
        assert session.scalars(select(AffiliateShare)).first() is None


def test_spent_web_counters_go(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    from dispatcher.models import WebFailure, WebHitTally

    now = utcnow()
    with session_scope(session_factory) as session:
        session.add(
            WebFailure(
                key="ip:192.0.2.0", window_start=(now - timedelta(days=2)).timestamp(), count=3
            )
        )
        session.add(WebFailure(key="ip:192.0.2.1", window_start=now.timestamp(), count=1))
        for age, net in ((200, "198.51.100.0"), (1, "198.51.100.1")):
            session.add(
                WebHitTally(
                    minute=now - timedelta(days=age),
                    network=net,
                    route="u",
                    outcome="tampered",
                    count=2,
                )
            )
    with session_scope(session_factory) as session:
        assert apply_retention(session, settings, dry_run=True).web_counters_removed == 2
        assert apply_retention(session, settings).web_counters_removed == 2
        assert [f.key for f in session.scalars(select(WebFailure))] == ["ip:192.0.2.1"]
        assert [t.network for t in session.scalars(select(WebHitTally))] == ["198.51.100.1"]


def test_raw_inbound_reports_go_after_their_window(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    from dispatcher.models import InboundMessage

    now = utcnow()
    with session_scope(session_factory) as session:
        for key, age in (("old", settings.inbound_keep_days + 1), ("new", 1)):
            session.add(
                InboundMessage(
                    key=key,
                    source="file",
                    received_at=now - timedelta(days=age),
                    kind="hard_bounce",
                    outcome="applied",
                    raw=b"Subject: bounce\r\n\r\nno such user",
                    raw_size=30,
                )
            )
    with session_scope(session_factory) as session:
        assert apply_retention(session, settings, dry_run=True).inbound_raw_removed == 1
        assert apply_retention(session, settings).inbound_raw_removed == 1
        kept = {m.key: m.raw for m in session.scalars(select(InboundMessage))}
        assert kept["old"] is None and kept["new"] is not None
