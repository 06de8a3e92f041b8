"""Fan-out in a bounded window: at most N batches of a campaign wait in the broker, and
every row is published, once, as batches finish (issue 13)."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import contact_ranges, fan_out, refill, refill_after
from dispatcher.campaigns.lifecycle import finish_if_done
from dispatcher.campaigns.recovery import stalled_campaigns
from dispatcher.campaigns.services import cancel_campaign, pause_campaign, resume_campaign
from dispatcher.db import read_only, session_scope
from dispatcher.models import Campaign, CampaignStatus, Contact, Delivery, DeliveryStatus
from suppression.models import Event, utcnow
from tests.factories import bulk_contacts

BATCH = 5
WINDOW = 3


def due_campaign(sessions: sessionmaker[Session], contacts: int) -> int:
    """A campaign due now to every contact, after adding ``contacts`` new ones."""
    with session_scope(sessions) as session:
        if contacts:
            bulk_contacts(session, contacts)
        campaign = Campaign(
            name="window",
            subject="s",
            template="new-releases",
            purpose="marketing",
            status=CampaignStatus.SCHEDULED.value,
            scheduled_at=utcnow() - timedelta(seconds=1),
        )
        session.add(campaign)
        session.flush()
        return campaign.id


def finish(sessions: sessionmaker[Session], campaign_id: int, batch: tuple[int, int]) -> None:
    """What a worker does to a batch, as far as the window can tell: its rows leave
    ``queued``."""
    with session_scope(sessions) as session:
        session.execute(
            update(Delivery)
            .where(
                Delivery.campaign_id == campaign_id,
                Delivery.id.between(*batch),
                Delivery.status == DeliveryStatus.QUEUED,
            )
            .values(status=DeliveryStatus.SENT.value)
        )


def waiting(
    sessions: sessionmaker[Session], campaign_id: int, published: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The published batches that still have queued rows (still in the broker)."""
    with sessions() as session:
        queued = set(
            session.scalars(
                select(Delivery.id).where(
                    Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.QUEUED
                )
            )
        )
    return [b for b in published if any(b[0] <= i <= b[1] for i in queued)]


def all_ids(sessions: sessionmaker[Session], campaign_id: int) -> list[int]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Delivery.id).where(Delivery.campaign_id == campaign_id).order_by(Delivery.id)
            )
        )


def covered(batches: list[tuple[int, int]], ids: list[int]) -> list[int]:
    """Each id once per batch that covers it."""
    return sorted(i for first, last in batches for i in ids if first <= i <= last)


def test_the_window_never_exceeds_n_and_every_row_is_published_once(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 53)
    published = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW))
    assert len(published) == WINDOW
    rng = random.Random(13)
    while True:
        in_broker = waiting(session_factory, campaign_id, published)
        assert len(in_broker) <= WINDOW
        if not in_broker:
            break
        finish(session_factory, campaign_id, rng.choice(in_broker))
        published += refill(session_factory, campaign_id, BATCH, WINDOW)
    ids = all_ids(session_factory, campaign_id)
    assert covered(published, ids) == ids  # every row in exactly one published batch
    assert len(published) == 11  # ceil(53 / 5)
    assert refill(session_factory, campaign_id, BATCH, WINDOW) == []


def test_a_lost_refill_is_made_up_by_the_next_one(session_factory: sessionmaker[Session]) -> None:
    """A worker killed after its batch and before its refill: beat's refill tops up."""
    campaign_id = due_campaign(session_factory, 30)
    published = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW))
    finish(session_factory, campaign_id, published[0])
    finish(session_factory, campaign_id, published[1])  # neither refilled
    topped_up = refill(session_factory, campaign_id, BATCH, WINDOW)  # beat
    assert len(topped_up) == 2
    assert len(waiting(session_factory, campaign_id, published + topped_up)) == WINDOW


def test_concurrent_refills_never_publish_the_same_rows(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 200)
    published = list(fan_out(session_factory, campaign_id, BATCH, window=8))
    for batch in published:
        finish(session_factory, campaign_id, batch)
    found: list[tuple[int, int]] = []
    lock = threading.Lock()

    def refiller() -> None:
        batches = refill(session_factory, campaign_id, BATCH, 8)
        with lock:
            found.extend(batches)

    threads = [threading.Thread(target=refiller) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = all_ids(session_factory, campaign_id)
    assert len(found) == 8  # the window's worth, not six windows
    hits = covered(published + found, ids)
    assert len(hits) == len(set(hits))  # no row in two batches


def test_a_paused_campaign_publishes_nothing_and_resuming_starts_from_the_first_queued_row(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 40)
    published = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW))
    finish(session_factory, campaign_id, published[0])
    with session_scope(session_factory) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(status=CampaignStatus.PAUSED.value)
        )
    assert refill(session_factory, campaign_id, BATCH, WINDOW) == []
    # The paused campaign's published batches ran and claimed nothing; resuming schedules
    # it again, and its fan-out publishes from the first row still queued.
    with session_scope(session_factory) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(status=CampaignStatus.SCHEDULED.value)
        )
    again = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW))
    assert again[0][0] == published[1][0]
    assert len(again) == WINDOW


def test_without_a_window_every_batch_is_published_at_once(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 23)
    batches = list(fan_out(session_factory, campaign_id, BATCH))
    assert len(batches) == 5
    assert refill(session_factory, campaign_id, BATCH, WINDOW) == []  # nothing left to publish


def test_each_finished_batch_hands_its_place_to_the_next_and_every_row_is_published_once(
    session_factory: sessionmaker[Session],
) -> None:
    """The batch task's own refill (no probe of the waiting batches)."""
    campaign_id = due_campaign(session_factory, 53)
    published = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW))
    rng = random.Random(17)
    while True:
        in_broker = waiting(session_factory, campaign_id, published)
        assert len(in_broker) <= WINDOW
        if not in_broker:
            break
        batch = rng.choice(in_broker)
        finish(session_factory, campaign_id, batch)
        after = refill_after(session_factory, campaign_id, batch[0], BATCH)
        assert len(after) <= 1
        published += after
        assert refill_after(session_factory, campaign_id, batch[0], BATCH) == []  # run twice
    ids = all_ids(session_factory, campaign_id)
    assert covered(published, ids) == ids
    assert len(published) == 11


def test_a_batch_beat_already_saw_finished_adds_nothing_more(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 40)
    published = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW))
    finish(session_factory, campaign_id, published[0])
    topped_up = refill(session_factory, campaign_id, BATCH, WINDOW)  # beat came first
    assert len(topped_up) == 1
    assert refill_after(session_factory, campaign_id, published[0][0], BATCH) == []
    assert len(waiting(session_factory, campaign_id, published + topped_up)) == WINDOW


def test_a_finished_batch_of_a_paused_campaign_publishes_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 40)
    published = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW))
    with session_scope(session_factory) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(status=CampaignStatus.PAUSED.value)
        )
    assert refill_after(session_factory, campaign_id, published[0][0], BATCH) == []


def test_batch_refills_racing_beat_never_exceed_the_window_or_publish_rows_twice(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 200)
    published = list(fan_out(session_factory, campaign_id, BATCH, window=8))
    for batch in published[:6]:
        finish(session_factory, campaign_id, batch)
    found: list[tuple[int, int]] = []
    lock = threading.Lock()

    def run(call: object) -> None:
        batches = call()  # type: ignore[operator]
        with lock:
            found.extend(batches)

    calls = [
        lambda b=batch: refill_after(session_factory, campaign_id, b[0], BATCH)
        for batch in published[:6]
    ] + [lambda: refill(session_factory, campaign_id, BATCH, 8)] * 3
    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    ids = all_ids(session_factory, campaign_id)
    assert len(found) == 6  # the six places the finished batches left, once each
    hits = covered(published + found, ids)
    assert len(hits) == len(set(hits))
    assert len(waiting(session_factory, campaign_id, published + found)) == 8


def test_deliveries_made_a_range_of_contacts_at_a_time_are_each_contact_once(
    session_factory: sessionmaker[Session],
) -> None:
    """The fan-out's INSERT runs per range of contact ids (PostgreSQL's memory per
    statement); ranges that do not divide the ids evenly still give every contact one row."""
    from dispatcher.campaigns.fanout import create_deliveries
    from dispatcher.models import Contact

    campaign_id = due_campaign(session_factory, 23)
    with session_scope(session_factory) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        assert create_deliveries(session, campaign, chunk=11) == 23  # ranges 1-11, 12-22, 23
        assert create_deliveries(session, campaign, chunk=7) == 0  # again: nothing added
        contacts = sorted(session.scalars(select(Contact.id)))
        delivered = sorted(
            session.scalars(select(Delivery.contact_id).where(Delivery.campaign_id == campaign_id))
        )
    assert delivered == contacts


class BrokerDown(Exception):
    pass


def broker_down(batches: list[tuple[int, int]]) -> None:
    """A publish the broker refuses."""
    raise BrokerDown


def mark(sessions: sessionmaker[Session], campaign_id: int) -> int | None:
    """The published mark as another connection sees it (what is committed)."""
    with read_only(sessions) as session:
        return session.scalar(select(Campaign.published_through).where(Campaign.id == campaign_id))


def test_batches_are_published_before_the_mark_that_covers_them_is_committed(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 30)
    seen: list[tuple[list[tuple[int, int]], int | None]] = []

    def publish(batches: list[tuple[int, int]]) -> None:
        seen.append((list(batches), mark(session_factory, campaign_id)))

    published = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW, publish=publish))
    # The fan-out tops the window up after each range of contacts (5, then 10 ids): each
    # publish happens while the committed mark is still the one before it.
    assert seen == [([published[0]], None), (published[1:], published[0][1])]
    assert mark(session_factory, campaign_id) == published[-1][1]
    finish(session_factory, campaign_id, published[0])
    after = refill_after(session_factory, campaign_id, published[0][0], BATCH, publish)
    assert seen[2] == (after, published[-1][1])
    finish(session_factory, campaign_id, published[1])
    topped_up = refill(session_factory, campaign_id, BATCH, WINDOW, publish)
    assert seen[3] == (topped_up, after[-1][1])
    assert len(seen) == 4


def test_a_failed_publish_moves_no_mark_and_the_next_refill_publishes_those_rows(
    session_factory: sessionmaker[Session],
) -> None:
    """The broker refuses the window: nothing is marked published, so beat's next refill
    publishes the same batches at once instead of the campaign waiting to be found stalled."""
    campaign_id = due_campaign(session_factory, 30)

    with pytest.raises(BrokerDown):
        list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW, publish=broker_down))
    assert mark(session_factory, campaign_id) is None
    published: list[tuple[int, int]] = []
    assert refill(session_factory, campaign_id, BATCH, WINDOW, published.extend) == published
    ids = all_ids(session_factory, campaign_id)
    assert len(published) == WINDOW and published[0][0] == ids[0]


def test_a_batch_whose_successor_could_not_be_published_gives_its_place_back(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 40)
    published = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW))
    finish(session_factory, campaign_id, published[0])

    with pytest.raises(BrokerDown):
        refill_after(session_factory, campaign_id, published[0][0], BATCH, broker_down)
    assert mark(session_factory, campaign_id) == published[-1][1]  # unmoved
    topped_up: list[tuple[int, int]] = []
    refill(session_factory, campaign_id, BATCH, WINDOW, topped_up.extend)  # beat, next tick
    assert len(topped_up) == 1 and topped_up[0][0] == published[-1][1] + 1
    ids = all_ids(session_factory, campaign_id)
    hits = covered(published + topped_up, ids)
    assert len(hits) == len(set(hits))
    assert len(waiting(session_factory, campaign_id, published + topped_up)) == WINDOW


# The fan-out adds its rows a range of contacts at a time (5, 10, 20 … ids with BATCH = 5),
# committing each range and topping the window up after it: the first batches send while
# the rest is added.


def rows_and_flag(sessions: sessionmaker[Session], campaign_id: int) -> tuple[int, bool, str]:
    """What another connection sees: the campaign's rows, ``fanning_out`` and its status."""
    with read_only(sessions) as session:
        rows = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.campaign_id == campaign_id)
        )
        fanning, state = session.execute(
            select(Campaign.fanning_out, Campaign.status).where(Campaign.id == campaign_id)
        ).one()
    return int(rows or 0), fanning, state


def by_status(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, int]:
    with sessions() as session:
        found = session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.status)
        )
        return {state: int(n) for state, n in found}


def each_contact_once(sessions: sessionmaker[Session], campaign_id: int) -> bool:
    with sessions() as session:
        contacts = sorted(session.scalars(select(Contact.id)))
        delivered = sorted(
            session.scalars(select(Delivery.contact_id).where(Delivery.campaign_id == campaign_id))
        )
    return delivered == contacts


def test_the_first_batches_are_published_before_the_fan_out_has_added_every_row(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 53)
    seen: list[tuple[int, bool, str]] = []

    def publish(batches: list[tuple[int, int]]) -> None:
        seen.append(rows_and_flag(session_factory, campaign_id))

    published = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW, publish=publish))
    assert seen[0] == (5, True, "sending")  # one batch's worth of contacts, then a publish
    assert rows_and_flag(session_factory, campaign_id) == (53, False, "sending")
    assert each_contact_once(session_factory, campaign_id)
    assert published[0][0] == all_ids(session_factory, campaign_id)[0]
    assert len(published) == WINDOW
    with session_factory() as session:
        events = session.scalars(select(Event).where(Event.kind == "campaign_fanned_out")).all()
    assert [e.detail["added"] for e in events] == [53]


def test_a_campaign_is_not_finished_while_its_fan_out_is_adding_rows(
    session_factory: sessionmaker[Session],
) -> None:
    """Every row added so far is sent before the next range is added (between the fan-out's
    yields, when no transaction of its own is open): the campaign stays ``sending`` until
    the fan-out has added them all, then closes."""
    campaign_id = due_campaign(session_factory, 23)
    closed: list[bool] = []
    for batch in fan_out(session_factory, campaign_id, BATCH, window=WINDOW):
        finish(session_factory, campaign_id, batch)
        with session_scope(session_factory) as session:
            closed.append(finish_if_done(session, campaign_id))
    # Ranges of 5, 10 and 20 ids: after the first batch and after the third, every row
    # added so far was sent, and only the fan-out's last range was missing.
    assert closed == [False, False, False, False, True]
    assert rows_and_flag(session_factory, campaign_id) == (23, False, "done")


def test_a_pause_stops_the_fan_out_and_resuming_adds_the_rest(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 53)
    published = []
    for batch in fan_out(session_factory, campaign_id, BATCH, window=WINDOW):
        published.append(batch)
        with session_scope(session_factory) as session:
            pause_campaign(session, campaign_id)
    assert len(published) == 1
    assert rows_and_flag(session_factory, campaign_id) == (5, True, "paused")
    with session_scope(session_factory) as session:
        resume_campaign(session, campaign_id)
    again = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW))
    assert again[0] == published[0]  # its rows are still queued: published again
    assert rows_and_flag(session_factory, campaign_id) == (53, False, "sending")
    assert each_contact_once(session_factory, campaign_id)


def test_a_cancel_during_the_fan_out_leaves_no_row_queued_and_adds_none_after_it(
    session_factory: sessionmaker[Session],
) -> None:
    campaign_id = due_campaign(session_factory, 53)
    dropped: list[int] = []
    for _ in fan_out(session_factory, campaign_id, BATCH, window=WINDOW):
        with session_scope(session_factory) as session:
            dropped.append(cancel_campaign(session, campaign_id))
    assert dropped == [5]
    assert rows_and_flag(session_factory, campaign_id) == (5, True, "cancelled")
    assert by_status(session_factory, campaign_id) == {"cancelled": 5}


def test_a_fan_out_that_died_half_way_is_found_stalled_and_its_retry_adds_the_rest(
    session_factory: sessionmaker[Session],
) -> None:
    """The worker dies after the first range (the generator is dropped there): every row
    it added is then sent, so none is queued, yet the campaign is neither done nor
    forgotten; the task's retry (or redelivery), which did not start the campaign, goes on."""
    campaign_id = due_campaign(session_factory, 53)
    started = fan_out(session_factory, campaign_id, BATCH, window=WINDOW)
    first = next(started)
    started.close()
    finish(session_factory, campaign_id, first)
    with session_scope(session_factory) as session:
        assert not finish_if_done(session, campaign_id)
        assert stalled_campaigns(session, lease_seconds=60, stall_seconds=0) == [campaign_id]
    assert rows_and_flag(session_factory, campaign_id) == (5, True, "sending")
    retried = list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW))
    assert len(retried) == WINDOW
    assert rows_and_flag(session_factory, campaign_id) == (53, False, "sending")
    assert each_contact_once(session_factory, campaign_id)
    with session_scope(session_factory) as session:
        assert stalled_campaigns(session, lease_seconds=60, stall_seconds=3600) == []


def test_a_failed_publish_while_ranges_remain_does_not_stop_the_fan_out(
    session_factory: sessionmaker[Session],
) -> None:
    """The broker refuses the first range's batch: the fan-out still adds every row (the
    next range's refill publishes from the first queued row, the refused batch included),
    then raises, so that the task's failure is recorded."""
    campaign_id = due_campaign(session_factory, 53)
    calls: list[list[tuple[int, int]]] = []

    def down_once(batches: list[tuple[int, int]]) -> None:
        calls.append(list(batches))
        if len(calls) == 1:
            raise BrokerDown

    with pytest.raises(BrokerDown):
        list(fan_out(session_factory, campaign_id, BATCH, window=WINDOW, publish=down_once))
    assert rows_and_flag(session_factory, campaign_id) == (53, False, "sending")
    ids = all_ids(session_factory, campaign_id)
    assert calls == [[(ids[0], ids[4])], [(ids[0], ids[4]), (ids[5], ids[9]), (ids[10], ids[14])]]
    assert mark(session_factory, campaign_id) == ids[14]


def test_contact_ranges_grow_from_one_batch_to_the_chunk() -> None:
    assert list(contact_ranges(1, 100, 5, 20)) == [
        (1, 6),
        (6, 16),
        (16, 36),
        (36, 56),
        (56, 76),
        (76, 96),
        (96, 116),
    ]
    assert list(contact_ranges(0, -1, 5, 20)) == []
    assert list(contact_ranges(7, 7, 5, 20)) == [(7, 12)]
