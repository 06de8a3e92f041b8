from __future__ import annotations

from sqlalchemy.orm import Session

from dispatcher.models import Campaign, Delivery
from dispatcher.stats import report
from tests.factories import make_contact


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
