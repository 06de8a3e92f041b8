"""Aggregate statistics: counts only, small cells and their complements withheld."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from click.testing import CliRunner
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.models import Campaign, Delivery
from dispatcher.settings import Settings
from dispatcher.sharing.stats import Cell, protect, report
from tests.factories import make_contact
from workers.cli import main


def campaign_with(session: Session, outcomes: dict[tuple[str, str | None], int]) -> None:
    campaign = Campaign(
        name="Spring", subject="s", template="t", purpose="marketing", status="done"
    )
    session.add(campaign)
    session.flush()
    n = 0
    for (status, reason), count in outcomes.items():
        for _ in range(count):
            contact = make_contact(session, f"c{n}@example.com", first_name="Secretname")
            session.add(
                Delivery(
                    campaign_id=campaign.id,
                    contact_id=contact.id,
                    address_id=contact.address_id,
                    status=status,
                    skip_reason=reason,
                )
            )
            n += 1
    session.flush()


def test_small_cells_are_withheld_with_their_complement(session: Session) -> None:
    campaign_with(
        session,
        {
            ("sent", None): 20,
            ("suppressed", "legal"): 2,
            ("suppressed", "opted_out"): 7,
            ("failed", "hard_bounce"): 9,
        },
    )
    cells = {c["outcome"]: c["count"] for c in report(session, 5)["deliveries"]}
    assert cells["suppressed:legal"] is None  # 2 < 5
    assert cells["suppressed:opted_out"] is None  # complement: else 38 - 20 - 9 - 7 = 2
    assert cells["sent"] == 20 and cells["failed:hard_bounce"] == 9


def test_report_names_nobody(session: Session) -> None:
    campaign_with(session, {("sent", None): 6})
    text = repr(report(session, 5))
    assert "@" not in text and "Secretname" not in text


def test_rates_need_enough_people(session: Session) -> None:
    campaign_with(session, {("sent", None): 3})
    summary = report(session, 5)["summary"]
    assert summary["contacts"] is None and summary["opt_in_rate"] is None


def test_rates_are_given_when_both_counts_are_large_enough(session: Session) -> None:
    campaign_with(session, {("sent", None): 10})
    summary = report(session, 5)["summary"]
    assert summary["contacts"] == 10 and summary["opt_in_rate"] == 1.0


def test_a_total_cannot_give_a_withheld_cell_away(session: Session) -> None:
    """One small 'sent' cell on another day: the published messages_sent total minus the
    visible sent cells would reveal it, so a second sent cell is withheld too."""
    campaign_with(session, {("sent", None): 30})
    late = session.scalars(select(Delivery).order_by(Delivery.id).limit(3)).all()
    for delivery in late:
        delivery.finished_at = datetime(2025, 2, 2, tzinfo=UTC)
    session.flush()
    data = report(session, 5)
    sent = [c for c in data["deliveries"] if c["outcome"] == "sent"]
    assert len(sent) == 2 and all(c["count"] is None for c in sent)
    assert data["summary"]["messages_sent"] == 30


cells = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(1, 40)), min_size=1, max_size=15
)


@hsettings(max_examples=50, deadline=None)
@given(values=cells, k=st.integers(1, 10))
def test_no_constraint_is_left_with_a_lone_withheld_cell(
    values: list[tuple[int, int, int]], k: int
) -> None:
    table = [Cell(f"c{c}", f"d{d}", f"o{i}", v) for i, (c, d, v) in enumerate(values)]
    groups = [[x for x in table if x.campaign == c] for c in {x.campaign for x in table}]
    groups += [[x for x in table if x.day == d] for d in {x.day for x in table}]
    protect(table, groups, k)
    assert all(x.withheld for x in table if x.value < k)
    for group in groups:
        hidden = [x for x in group if x.withheld]
        assert len(hidden) != 1 or len(group) == 1


def test_stats_command_prints_no_small_cell(settings: Settings) -> None:
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with session_scope(sessions) as session:
        campaign_with(session, {("sent", None): 12, ("failed", "hard_bounce"): 2})
    env = {
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": ",".join(settings.secret_keys),
    }
    runner = CliRunner()
    as_json = runner.invoke(main, ["stats", "--format", "json"], env=env, catch_exceptions=False)
    data = json.loads(as_json.output)
    assert [c["count"] for c in data["deliveries"]] == [None, None]
    assert data["summary"]["contacts"] == 14
    as_csv = runner.invoke(main, ["stats", "--format", "csv", "--k", "3"], env=env)
    rows = list(csv.reader(io.StringIO(as_csv.output)))
    assert rows[0] == ["campaign", "day", "outcome", "count"]
    assert [r[3] for r in rows[1:] if r[0] != "*"] == ["<3", "<3"]
    table = runner.invoke(main, ["stats"], env=env)
    assert table.exit_code == 0 and "<5" in table.output and "@" not in table.output
    assert runner.invoke(main, ["stats", "--k", "0"], env=env).exit_code != 0


def test_bounce_and_complaint_totals_and_rates_with_small_ones_withheld(session: Session) -> None:
    campaign_with(session, {("sent", None): 20})
    rows = session.scalars(select(Delivery).order_by(Delivery.id)).all()
    for delivery in rows[:6]:
        delivery.feedback = "hard_bounce"
    for delivery in rows[6:8]:
        delivery.feedback = "complaint"
    for delivery in rows[8:13]:
        delivery.feedback = "soft_bounce"
    session.flush()
    summary = report(session, 5)["summary"]
    assert (summary["hard_bounces"], summary["hard_bounce_rate_per_message"]) == (6, 0.3)
    assert (summary["soft_bounces"], summary["soft_bounce_rate_per_message"]) == (5, 0.25)
    assert (summary["complaints"], summary["complaint_rate_per_message"]) == (None, None)
