"""The campaign lifecycle: one table of transitions, refused ones change nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from dispatcher.campaigns import lifecycle
from dispatcher.campaigns.fanout import create_deliveries
from dispatcher.campaigns.lifecycle import (
    IllegalTransition,
    close_finished,
    finish_if_done,
    move,
    start_if_due,
)
from dispatcher.models import Campaign, CampaignStatus, Delivery, DeliveryStatus
from suppression.models import utcnow
from tests.factories import make_contact

S = CampaignStatus
ALLOWED = {
    (S.DRAFT, S.SCHEDULED),
    (S.DRAFT, S.CANCELLED),
    (S.SCHEDULED, S.SENDING),
    (S.SCHEDULED, S.PAUSED),
    (S.SCHEDULED, S.CANCELLED),
    (S.SENDING, S.DONE),
    (S.SENDING, S.PAUSED),
    (S.SENDING, S.CANCELLED),
    (S.SENDING, S.SCHEDULED),  # staff resend the unknown rows
    (S.PAUSED, S.SCHEDULED),
    (S.PAUSED, S.CANCELLED),
    (S.DONE, S.SCHEDULED),  # staff resend the unknown rows
}


def campaign(session: Session, status: CampaignStatus, *rows: DeliveryStatus) -> Campaign:
    made = Campaign(
        name="c", subject="s", template="new-releases", purpose="marketing", status=status.value
    )
    session.add(made)
    session.flush()
    for n, row in enumerate(rows):
        contact = make_contact(session, f"r{n}-{made.id}@example.com")
        session.add(
            Delivery(
                campaign_id=made.id,
                contact_id=contact.id,
                address_id=contact.address_id,
                status=row.value,
            )
        )
    session.flush()
    return made


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("wanted", list(S))
def test_the_table_allows_exactly_the_documented_transitions(
    session: Session, current: CampaignStatus, wanted: CampaignStatus
) -> None:
    made = campaign(session, current)
    if (current, wanted) in ALLOWED:
        assert move(session, made.id, wanted).status == wanted.value
        return
    with pytest.raises(IllegalTransition) as caught:
        move(session, made.id, wanted)
    assert str(caught.value) == (
        f"campaign {made.id} is {current.value}; it cannot become {wanted.value}"
    )
    assert (caught.value.campaign_id, caught.value.current, caught.value.wanted) == (
        made.id,
        current.value,
        wanted,
    )
    session.refresh(made)
    assert made.status == current.value


def test_transitions_stamp_their_times(session: Session) -> None:
    made = campaign(session, S.SCHEDULED)
    assert made.started_at is None and made.finished_at is None
    move(session, made.id, S.SENDING)
    assert made.started_at is not None and made.finished_at is None
    move(session, made.id, S.DONE)
    assert made.finished_at is not None
    move(session, made.id, S.SCHEDULED)
    assert made.finished_at is None


def test_a_transition_stamps_the_time_it_is_given(session: Session) -> None:
    at = utcnow() - timedelta(minutes=5)
    made = campaign(session, S.SCHEDULED)
    assert move(session, made.id, S.SENDING, now=at).started_at == at
    assert move(session, made.id, S.DONE, now=at).finished_at == at


def test_an_unknown_campaign_is_named(session: Session) -> None:
    with pytest.raises(lifecycle.CampaignError, match="no campaign with id 404"):
        move(session, 404, S.PAUSED)


def test_start_only_a_scheduled_campaign_that_is_due(session: Session) -> None:
    made = campaign(session, S.SCHEDULED)
    made.scheduled_at = utcnow() + timedelta(hours=1)
    session.flush()
    assert not start_if_due(session, made.id)
    assert start_if_due(session, made.id, now=utcnow() + timedelta(hours=2))
    session.refresh(made)
    assert made.status == "sending" and made.started_at is not None
    assert not start_if_due(session, made.id, now=utcnow() + timedelta(hours=2))
    paused = campaign(session, S.PAUSED)
    paused.scheduled_at = utcnow()
    session.flush()
    assert not start_if_due(session, paused.id)


def test_start_is_due_at_the_scheduled_moment_and_starts_only_that_campaign(
    session: Session,
) -> None:
    at = utcnow()
    made, other = campaign(session, S.SCHEDULED), campaign(session, S.SCHEDULED)
    made.scheduled_at = other.scheduled_at = at
    session.flush()
    assert start_if_due(session, made.id, now=at)
    session.refresh(made)
    session.refresh(other)
    assert (made.status, made.started_at) == ("sending", at)
    assert (other.status, other.started_at) == ("scheduled", None)


@pytest.mark.parametrize("pending", [DeliveryStatus.QUEUED, DeliveryStatus.SENDING])
def test_finish_waits_for_every_pending_row(session: Session, pending: DeliveryStatus) -> None:
    made = campaign(session, S.SENDING, DeliveryStatus.SENT, pending)
    assert not finish_if_done(session, made.id)
    session.refresh(made)
    assert made.status == "sending" and made.finished_at is None


@pytest.mark.parametrize("final", ["sent", "failed", "suppressed", "cancelled", "unknown"])
def test_finish_closes_a_campaign_whose_rows_are_all_final(session: Session, final: str) -> None:
    made = campaign(session, S.SENDING, DeliveryStatus.SENT, DeliveryStatus(final))
    assert finish_if_done(session, made.id)
    session.refresh(made)
    assert made.status == "done" and made.finished_at is not None
    assert not finish_if_done(session, made.id)


@pytest.mark.parametrize("status", [S.PAUSED, S.CANCELLED, S.SCHEDULED, S.DRAFT])
def test_finish_leaves_a_campaign_that_is_not_sending(
    session: Session, status: CampaignStatus
) -> None:
    made = campaign(session, status, DeliveryStatus.SENT)
    assert not finish_if_done(session, made.id)
    session.refresh(made)
    assert made.status == status.value


def test_finish_of_an_unknown_campaign_does_nothing(session: Session) -> None:
    assert not finish_if_done(session, 404)


def test_the_sweep_closes_only_sending_campaigns_with_nothing_pending(session: Session) -> None:
    open_left = campaign(session, S.SENDING, DeliveryStatus.SENT, DeliveryStatus.SENDING)
    forgotten = campaign(session, S.SENDING, DeliveryStatus.SENT, DeliveryStatus.CANCELLED)
    paused = campaign(session, S.PAUSED, DeliveryStatus.SENT)
    # The last pending row of ``open_left`` becomes final behind the lifecycle's back.
    assert close_finished(session) == [forgotten.id]
    session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == open_left.id)
        .values(status=DeliveryStatus.SENT.value)
    )
    assert close_finished(session) == [open_left.id]
    for made, status in ((open_left, "done"), (forgotten, "done"), (paused, "paused")):
        session.refresh(made)
        assert made.status == status


def test_an_empty_audience_finishes_at_fan_out(session: Session) -> None:
    made = campaign(session, S.SENDING)
    assert create_deliveries(session, made) == 0
    assert finish_if_done(session, made.id)
