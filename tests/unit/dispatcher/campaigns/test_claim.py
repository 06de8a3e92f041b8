"""The claim statement: the gate applied at the moment rows are taken for sending."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.campaigns.fanout import create_deliveries
from dispatcher.models import Campaign, CampaignStatus, Delivery
from dispatcher.sending.batch import claim_batch, orphan_stale_claims
from suppression.models import ConsentStatus, Reason
from suppression.suppressions import add_suppression
from tests.factories import make_contact, make_sending_campaign


def sending_campaign(session: Session, purpose: str = "marketing") -> Campaign:
    campaign_id, _ = make_sending_campaign(session, purpose)
    campaign = session.get(Campaign, campaign_id)
    assert campaign is not None
    return campaign


def rows(session: Session, campaign: Campaign) -> dict[str, tuple[str, str | None]]:
    from suppression.models import Address

    result = session.execute(
        select(Address.address, Delivery.status, Delivery.skip_reason)
        .join(Address, Address.id == Delivery.address_id)
        .where(Delivery.campaign_id == campaign.id)
    )
    return {a: (s, r) for a, s, r in result}


def test_claim_takes_eligible_rows_and_marks_the_rest_with_their_reason(
    session: Session,
) -> None:
    make_contact(session, "in@example.com")
    make_contact(session, "out@example.com", marketing=ConsentStatus.OPTED_OUT)
    make_contact(session, "never@example.com", marketing=None)
    make_contact(
        session, "bounced@example.com", suppressed=Reason.HARD_BOUNCE, suppression_scope="global"
    )
    campaign = sending_campaign(session)

    claimed, skipped = claim_batch(session, campaign, 0, 10**9, "tok")

    assert [r.address for r in claimed] == ["in@example.com"]
    assert skipped == 3
    assert rows(session, campaign) == {
        "in@example.com": ("sending", None),
        "out@example.com": ("suppressed", "opted_out"),
        "never@example.com": ("suppressed", "not_asked"),
        "bounced@example.com": ("suppressed", "hard_bounce"),
    }


def test_a_second_claim_of_the_same_batch_takes_nothing(session: Session) -> None:
    make_contact(session, "in@example.com")
    campaign = sending_campaign(session)
    first, _ = claim_batch(session, campaign, 0, 10**9, "one")
    second, skipped = claim_batch(session, campaign, 0, 10**9, "two")
    assert len(first) == 1 and second == [] and skipped == 0


def test_suppression_after_fan_out_is_seen_by_the_claim(session: Session) -> None:
    contact = make_contact(session, "late@example.com")
    campaign = sending_campaign(session)
    add_suppression(
        session, contact.address_id, scope="marketing", reason=Reason.UNSUBSCRIBE, source="test"
    )
    claimed, skipped = claim_batch(session, campaign, 0, 10**9, "tok")
    assert claimed == [] and skipped == 1
    assert rows(session, campaign)["late@example.com"] == ("suppressed", "unsubscribe")


def test_paused_campaign_claims_nothing(session: Session) -> None:
    make_contact(session, "in@example.com")
    campaign = sending_campaign(session)
    sending_campaign(session)  # another campaign still sending does not unpause this one
    campaign.status = CampaignStatus.PAUSED.value
    session.flush()
    claimed, skipped = claim_batch(session, campaign, 0, 10**9, "tok")
    assert (claimed, skipped) == ([], 0)
    assert rows(session, campaign)["in@example.com"] == ("queued", None)


def test_service_notice_ignores_opt_out_but_not_postal_request(session: Session) -> None:
    make_contact(session, "out@example.com", marketing=ConsentStatus.OPTED_OUT)
    make_contact(
        session, "post@example.com", suppressed=Reason.POSTAL_REQUEST, suppression_scope="global"
    )
    campaign = sending_campaign(session, purpose="service_notice")
    claimed, _ = claim_batch(session, campaign, 0, 10**9, "tok")
    assert [r.address for r in claimed] == ["out@example.com"]
    assert rows(session, campaign)["post@example.com"] == ("suppressed", "postal_request")


def test_rows_left_sending_by_a_dead_execution_become_unknown_not_resent(
    session: Session,
) -> None:
    make_contact(session, "in@example.com")
    campaign = sending_campaign(session)
    claim_batch(session, campaign, 0, 10**9, "dead-worker")
    # Within the lease the claim is presumed alive: left to its owner.
    assert orphan_stale_claims(session, campaign.id, 0, 10**9, "redelivered", 60) == 0
    assert rows(session, campaign)["in@example.com"] == ("sending", None)
    orphaned = orphan_stale_claims(session, campaign.id, 0, 10**9, "redelivered", -1)
    claimed, _ = claim_batch(session, campaign, 0, 10**9, "redelivered")
    assert orphaned == 1 and claimed == []
    assert rows(session, campaign)["in@example.com"] == ("unknown", "outcome_hidden_by_crash")


def test_fan_out_twice_adds_no_rows(session: Session) -> None:
    make_contact(session, "a@example.com")
    make_contact(session, "b@example.com")
    campaign = sending_campaign(session)
    assert create_deliveries(session, campaign) == 0
    assert len(rows(session, campaign)) == 2


def test_a_claim_starts_a_fresh_lease_even_on_a_row_renewed_by_an_earlier_claim(
    session: Session,
) -> None:
    """A row put back in the queue after lease renewals, then claimed again, is alive for
    the new claim: another execution must not take it for dead by the old renewal time."""
    from datetime import timedelta

    from sqlalchemy import update

    from suppression.models import utcnow

    make_contact(session, "in@example.com")
    campaign = sending_campaign(session)
    session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign.id)
        .values(renewed_at=utcnow() - timedelta(hours=1))
    )
    claimed, _ = claim_batch(session, campaign, 0, 10**9, "live")
    assert len(claimed) == 1
    assert orphan_stale_claims(session, campaign.id, 0, 10**9, "redelivered", 60) == 0
    row = session.scalars(select(Delivery).where(Delivery.campaign_id == campaign.id)).one()
    assert (row.status, row.claim_token, row.renewed_at, row.attempts) == (
        "sending",
        "live",
        None,
        1,
    )
    assert row.claimed_at is not None


def test_a_claim_takes_only_its_own_campaigns_rows_in_its_own_range(session: Session) -> None:
    for n in range(4):
        make_contact(session, f"r{n}@example.com")
    campaign = sending_campaign(session)
    other = sending_campaign(session)  # ids after this campaign's, inside a wide range
    ids = sorted(session.scalars(select(Delivery.id).where(Delivery.campaign_id == campaign.id)))
    claimed, _ = claim_batch(session, campaign, ids[1], ids[2], "tok")
    assert sorted(r.delivery_id for r in claimed) == ids[1:3]
    statuses = dict(
        session.execute(
            select(Delivery.id, Delivery.status).where(Delivery.campaign_id == campaign.id)
        ).all()
    )
    assert [statuses[i] for i in ids] == ["queued", "sending", "sending", "queued"]
    claim_batch(session, campaign, 0, 10**9, "wide")
    assert set(
        session.scalars(select(Delivery.status).where(Delivery.campaign_id == other.id))
    ) == {"queued"}


def test_the_gates_reasons_are_added_to_the_counts_the_caller_gives(session: Session) -> None:
    """``reasons`` is a tally the caller keeps: each claim adds its refusals to it."""
    from collections import Counter

    for n in range(3):
        make_contact(session, f"out{n}@example.com", marketing=ConsentStatus.OPTED_OUT)
    make_contact(session, "never@example.com", marketing=None)
    campaign = sending_campaign(session)
    ids = sorted(session.scalars(select(Delivery.id).where(Delivery.campaign_id == campaign.id)))
    reasons: Counter[str] = Counter()
    _, skipped = claim_batch(session, campaign, ids[0], ids[1], "one", reasons)
    assert (skipped, reasons) == (2, Counter({"opted_out": 2}))
    _, skipped = claim_batch(session, campaign, ids[2], ids[3], "two", reasons)
    assert (skipped, reasons) == (2, Counter({"opted_out": 3, "not_asked": 1}))
