"""One batch, claimed and sent for real (SMTP to the in-process sink): the two ways the send
loop could hand a transport a message it must not (ARCHITECTURE.md, invariants 1 and 3).

- The claim fails closed: when its statement errors, nothing is claimed and nothing sent.
- An execution sends only the rows its own claim took, even when another execution holds
  rows of the same batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns import counts
from dispatcher.db import session_scope
from dispatcher.models import Campaign, Delivery, DeliveryStatus, RateLimit
from dispatcher.sending.batch import (
    BatchResult,
    RetryLater,
    _Lease,
    _record,
    describe,
    orphan_stale_claims,
    send_batch,
)
from dispatcher.sending.transports import PermanentSendError
from dispatcher.settings import Settings
from suppression.models import Address, Reason, Suppression, utcnow
from tests.factories import make_contact, make_sending_campaign
from tests.support.smtp_sink import SmtpSink

ADDRESSES = [f"r{n}@example.com" for n in range(6)]


def sending_campaign(sessions: sessionmaker[Session], *suppressed: str) -> tuple[int, list[int]]:
    """A sending campaign to ADDRESSES (those named suppressed for marketing); its row ids."""
    with session_scope(sessions) as session:
        for address in ADDRESSES:
            make_contact(
                session, address, suppressed=Reason.UNSUBSCRIBE if address in suppressed else None
            )
        return make_sending_campaign(session)


def rows(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, tuple[str, str | None]]:
    with sessions() as session:
        found = session.execute(
            select(Address.address, Delivery.status, Delivery.claim_token)
            .join(Address, Address.id == Delivery.address_id)
            .where(Delivery.campaign_id == campaign_id)
        )
        return {a: (s, t) for a, s, t in found}


def sent_to(sink: SmtpSink) -> list[str]:
    return sorted(r for message in sink.received() for r in message.recipients)


def assert_counters_match(sessions: sessionmaker[Session]) -> None:
    """The campaign counters moved exactly as the rows did (per status and skip reason)."""
    with sessions() as session:
        assert [str(m) for m in counts.verify(session)] == []


@pytest.fixture
def to_sink(settings: Settings, smtp_sink: SmtpSink) -> Settings:
    return settings.replace(mail_url=smtp_sink.url)


@pytest.fixture
def send(
    to_sink: Settings, session_factory: sessionmaker[Session]
) -> Callable[[int, int, int], object]:
    from suppression.tokens import TokenSigner

    signer = TokenSigner(to_sink.secret_keys)
    return lambda campaign_id, first, last: send_batch(
        to_sink, session_factory, signer, campaign_id, first, last
    )


def test_a_batch_is_sent_to_the_eligible_rows_only(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    campaign_id, ids = sending_campaign(session_factory, ADDRESSES[1])
    result = send(campaign_id, ids[0], ids[-1])
    assert sent_to(smtp_sink) == sorted(set(ADDRESSES) - {ADDRESSES[1]})
    assert rows(session_factory, campaign_id)[ADDRESSES[1]][0] == "suppressed"
    assert (result.claimed, result.skipped, len(result.sent)) == (5, 1, 5)  # type: ignore[attr-defined]
    for address, (status, reason, error, attempts, token, finished) in details(
        session_factory, campaign_id
    ).items():
        assert attempts == 1 and finished is not None and token is not None, address
        assert (status, reason) == (
            ("suppressed", "unsubscribe") if address == ADDRESSES[1] else ("sent", None)
        )
        assert error is None
    assert campaign_status(session_factory, campaign_id) == "done"
    messages = [r.message for r in smtp_sink.received()]
    assert all(m["To"].startswith("Ann Example <") for m in messages)
    assert len({m["Message-ID"] for m in messages}) == len(messages)  # one per recipient
    assert_counters_match(session_factory)


def metric_deltas(run: Callable[[], object]) -> dict[str, float]:
    """How much each marketing batch metric moved while ``run`` ran."""
    from dispatcher.ops.metrics import BATCH_SECONDS, MESSAGES, SUPPRESSED

    def now() -> dict[str, float]:
        values = {o: MESSAGES.labels("marketing", o)._value.get() for o in OUTCOMES}
        values["suppressed"] = SUPPRESSED.labels("marketing", "unsubscribe")._value.get()
        values["seconds"] = BATCH_SECONDS.labels("marketing")._sum.get()
        values["handed"] = REGISTRY.get_sample_value("dispatcher_send_seconds_count") or 0.0
        values["handing"] = REGISTRY.get_sample_value("dispatcher_send_seconds_sum") or 0.0
        for klass in ("2xx", "4xx", "5xx"):
            values[klass] = (
                REGISTRY.get_sample_value("dispatcher_smtp_replies_total", {"class": klass}) or 0.0
            )
        return values

    before = now()
    with contextlib.suppress(RetryLater):
        run()
    return {k: v - before[k] for k, v in now().items()}


OUTCOMES = ("sent", "failed", "unknown", "retried")


def test_a_batch_counts_its_messages_and_the_gate_s_refusals_in_the_metrics(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    smtp_sink.reject(ADDRESSES[2], "550 5.1.1 mailbox unavailable")
    campaign_id, ids = sending_campaign(session_factory, ADDRESSES[1], ADDRESSES[3])
    moved = metric_deltas(lambda: send(campaign_id, ids[0], ids[-1]))
    assert 0 < moved.pop("seconds") < 60
    assert 0 < moved.pop("handing") < 60  # the four sends' own time, not a clock reading
    assert moved == {
        "sent": 3,
        "failed": 1,
        "unknown": 0,
        "retried": 0,
        "suppressed": 2,
        # Every message handed to the transport is timed, the refused one too; each final
        # reply is counted by its class.
        "handed": 4,
        "2xx": 3,
        "4xx": 0,
        "5xx": 1,
    }
    assert_counters_match(session_factory)


def test_rows_put_back_and_rows_of_unknown_outcome_are_counted_in_the_metrics(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    campaign_id, ids = sending_campaign(session_factory)
    smtp_sink.tempfail_next(1, "421 4.3.2 shutting down")
    moved = metric_deltas(lambda: send(campaign_id, ids[0], ids[-1]))
    assert (moved["sent"], moved["retried"]) == (0, len(ADDRESSES))
    assert (moved["handed"], moved["4xx"]) == (1, 1)  # the first 421 puts the batch back
    smtp_sink.drop_connection_after_data(1)
    moved = metric_deltas(lambda: send(campaign_id, ids[0], ids[-1]))
    assert moved["unknown"] == 1


def test_recording_touches_only_rows_this_execution_still_holds(
    session_factory: sessionmaker[Session],
) -> None:
    """Outcomes are written only to rows still 'sending' under this execution's token, and
    only the outcome given for each: a row another execution holds, or one already made
    final behind this execution's back (its lease lapsed), keeps its state."""
    campaign_id, ids = sending_campaign(session_factory)
    more = [ids[-1]]  # one row of mine with no outcome given: left as it is
    with session_scope(session_factory) as session:
        make_contact(session, "late@example.com")
    with session_scope(session_factory) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids[:4] + more))
            .values(status="sending", claim_token="mine", claimed_at=utcnow())
        )
        session.execute(
            update(Delivery)
            .where(Delivery.id == ids[4])
            .values(status="unknown", claim_token="mine", skip_reason="outcome_hidden_by_crash")
        )
    with session_scope(session_factory) as session:
        other_campaign, other_ids = make_sending_campaign(session)
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(other_ids))
            .values(status="sending", claim_token="other", claimed_at=utcnow())
        )
        for campaign in (campaign_id, other_campaign):  # the counters of the rows set above
            counts.rebuild(session, campaign)
    everyone_else = other_ids[:4]
    outcome = BatchResult(
        sent=[ids[0], ids[4], everyone_else[0]],
        unknown=[ids[1], everyone_else[1]],
        released=[ids[2], everyone_else[2]],
        failed={ids[3]: "refused", everyone_else[3]: "refused"},
    )
    with session_scope(session_factory) as session:
        _record(session, campaign_id, "mine", outcome)
    with session_factory() as session:
        state = dict(
            session.execute(
                select(Delivery.id, Delivery.status).where(Delivery.id.in_(ids + other_ids))
            ).all()
        )
    assert [state[i] for i in ids] == ["sent", "unknown", "queued", "failed", "unknown", "sending"]
    assert {state[i] for i in other_ids} == {"sending"}
    assert campaign_status(session_factory, campaign_id) == "sending"
    assert campaign_status(session_factory, other_campaign) == "sending"
    assert_counters_match(session_factory)
    # Outcomes only for rows this execution no longer holds: no row and no counter moves.
    with session_scope(session_factory) as session:
        _record(
            session,
            other_campaign,
            "mine",
            BatchResult(sent=[other_ids[0]], unknown=[other_ids[1]], released=[other_ids[2]]),
        )
    assert_counters_match(session_factory)


def test_a_failure_is_not_written_over_an_outcome_another_execution_gave_the_row(
    session_factory: sessionmaker[Session],
) -> None:
    """A row of this claim that another execution took for dead (made 'unknown', the claim
    token kept) keeps that outcome when this execution then reports it failed."""
    campaign_id, ids = sending_campaign(session_factory)
    with session_scope(session_factory) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids[:2]))
            .values(status="sending", claim_token="mine", claimed_at=utcnow())
        )
        session.execute(
            update(Delivery)
            .where(Delivery.id == ids[1])
            .values(status="unknown", skip_reason="outcome_hidden_by_crash")
        )
        counts.rebuild(session, campaign_id)
    refused = "550 5.1.1 mailbox unavailable"
    outcome = BatchResult(
        failed={ids[0]: refused, ids[1]: refused},
        reasons={ids[0]: "hard_bounce", ids[1]: "hard_bounce"},
    )
    with session_scope(session_factory) as session:
        _record(session, campaign_id, "mine", outcome)
    with session_factory() as session:
        state = {
            i: (s, r)
            for i, s, r in session.execute(
                select(Delivery.id, Delivery.status, Delivery.skip_reason).where(
                    Delivery.id.in_(ids[:2])
                )
            )
        }
    assert state == {
        ids[0]: ("failed", "hard_bounce"),
        ids[1]: ("unknown", "outcome_hidden_by_crash"),
    }
    assert_counters_match(session_factory)


def test_a_claim_cut_by_a_failing_statement_sends_nothing(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    """The claim UPDATE itself raises (a trigger refusing it): nothing claimed, nothing sent."""
    campaign_id, ids = sending_campaign(session_factory)
    with session_scope(session_factory) as session:
        session.execute(
            text(
                "CREATE TRIGGER refuse_claims BEFORE UPDATE OF status ON deliveries "
                "WHEN NEW.status <> OLD.status BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        )
    with pytest.raises(DBAPIError):
        send(campaign_id, ids[0], ids[-1])
    assert sent_to(smtp_sink) == []
    assert {s for s, _ in rows(session_factory, campaign_id).values()} == {"queued"}


def test_two_executions_holding_rows_of_one_batch_never_send_each_others_rows(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    """Half of the batch is held by another, live execution (claimed a moment ago, its lease
    fresh); this execution must send exactly the other half, and leave the held rows alone."""
    campaign_id, ids = sending_campaign(session_factory)
    held = ids[::2]
    with session_scope(session_factory) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(held))
            .values(status=DeliveryStatus.SENDING.value, claim_token="other", claimed_at=utcnow())
        )
    result = send(campaign_id, ids[0], ids[-1])
    mine = [a for a, i in zip(ADDRESSES, ids, strict=True) if i not in held]
    theirs = [a for a, i in zip(ADDRESSES, ids, strict=True) if i in held]
    assert sent_to(smtp_sink) == sorted(mine)
    after = rows(session_factory, campaign_id)
    assert all(after[a] == ("sending", "other") for a in theirs)
    assert all(after[a][0] == "sent" for a in mine)
    assert result.claimed == len(mine) and result.orphaned == 0  # type: ignore[attr-defined]


def test_a_second_execution_of_a_sent_batch_sends_nothing(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    campaign_id, ids = sending_campaign(session_factory)
    send(campaign_id, ids[0], ids[-1])
    smtp_sink.clear()
    send(campaign_id, ids[0], ids[-1])
    assert sent_to(smtp_sink) == []
    with session_factory() as session:
        status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    assert status == "done"


def details(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, tuple]:
    """address -> (status, skip reason, error, attempts, claim token) of its row."""
    with sessions() as session:
        found = session.execute(
            select(
                Address.address,
                Delivery.status,
                Delivery.skip_reason,
                Delivery.error,
                Delivery.attempts,
                Delivery.claim_token,
                Delivery.finished_at,
            )
            .join(Address, Address.id == Delivery.address_id)
            .where(Delivery.campaign_id == campaign_id)
        )
        return {a: tuple(rest) for a, *rest in found}


def test_a_recipient_the_relay_refuses_fails_with_a_global_hard_bounce(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    smtp_sink.reject(ADDRESSES[2], "550 5.1.1 mailbox unavailable")
    campaign_id, ids = sending_campaign(session_factory)
    result = send(campaign_id, ids[0], ids[-1])
    assert sent_to(smtp_sink) == sorted(set(ADDRESSES) - {ADDRESSES[2]})
    status, reason, error, attempts, _, finished = details(session_factory, campaign_id)[
        ADDRESSES[2]
    ]
    assert (status, reason, attempts) == ("failed", "hard_bounce", 1)
    assert "550" in error and finished is not None
    assert result.failed and result.bounced  # type: ignore[attr-defined]
    with session_factory() as session:
        bounce = session.execute(
            select(Suppression.scope, Suppression.reason, Suppression.source)
            .join(Address, Address.id == Suppression.address_id)
            .where(Address.address == ADDRESSES[2])
        ).all()
    assert bounce == [("global", "hard_bounce", f"smtp:campaign:{campaign_id}")]
    assert campaign_status(session_factory, campaign_id) == "done"
    assert_counters_match(session_factory)


def test_a_temporary_refusal_puts_the_row_back_and_the_retry_sends_it_once(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    smtp_sink.tempfail_next(1, "451 4.3.0 try again later")
    campaign_id, ids = sending_campaign(session_factory)
    with pytest.raises(RetryLater, match="1 messages put back") as caught:
        send(campaign_id, ids[0], ids[-1])
    assert "451" in str(caught.value.__cause__)
    first = details(session_factory, campaign_id)
    back = [a for a, row in first.items() if row[0] == "queued"]
    assert len(back) == 1 and first[back[0]][4] is None  # claim released
    assert sent_to(smtp_sink) == sorted(set(ADDRESSES) - set(back))
    assert campaign_status(session_factory, campaign_id) == "sending"
    send(campaign_id, ids[0], ids[-1])
    assert sent_to(smtp_sink) == sorted(ADDRESSES)
    after = details(session_factory, campaign_id)
    assert after[back[0]][0] == "sent" and after[back[0]][3] == 2  # claimed twice
    assert campaign_status(session_factory, campaign_id) == "done"


def test_a_connection_lost_after_the_message_leaves_the_row_unknown(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    smtp_sink.drop_connection_after_data(1)
    campaign_id, ids = sending_campaign(session_factory)
    try:
        send(campaign_id, ids[0], ids[-1])
    except RetryLater:
        send(campaign_id, ids[0], ids[-1])
    rows_now = details(session_factory, campaign_id)
    unknown = [a for a, row in rows_now.items() if row[0] == "unknown"]
    assert len(unknown) == 1 and rows_now[unknown[0]][1] == "connection_lost"
    assert rows_now[unknown[0]][5] is not None  # finished: its outcome is final
    assert_counters_match(session_factory)
    assert {row[0] for a, row in rows_now.items() if a not in unknown} == {"sent"}
    # The hidden outcome is never resent on its own.
    assert sum(r.recipients.count(unknown[0]) for r in smtp_sink.received()) == 1
    assert campaign_status(session_factory, campaign_id) == "done"


def test_a_relay_refusing_our_sender_fails_nobody_and_sends_nothing(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    # Our envelope sender is the VERP return path (bounces+d<id>.<tag>@…).
    smtp_sink.reject("bounces@killertracks.com", "550 5.7.1 sender not allowed")
    campaign_id, ids = sending_campaign(session_factory)
    with pytest.raises(RetryLater, match=f"{len(ADDRESSES)} messages put back") as caught:
        send(campaign_id, ids[0], ids[-1])
    assert isinstance(caught.value.__cause__, PermanentSendError)  # the why, for the record
    assert sent_to(smtp_sink) == []
    rows_now = details(session_factory, campaign_id)
    assert {(row[0], row[4]) for row in rows_now.values()} == {("queued", None)}
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 0


def test_a_claim_of_a_paused_campaign_sends_nothing(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    campaign_id, ids = sending_campaign(session_factory)
    with session_scope(session_factory) as session:
        session.execute(update(Campaign).where(Campaign.id == campaign_id).values(status="paused"))
    result = send(campaign_id, ids[0], ids[-1])
    assert sent_to(smtp_sink) == [] and result.claimed == 0  # type: ignore[attr-defined]
    assert {row[0] for row in details(session_factory, campaign_id).values()} == {"queued"}


def test_rows_a_dead_execution_left_sending_become_unknown_and_are_not_resent(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    campaign_id, ids = sending_campaign(session_factory)
    long_ago = utcnow() - timedelta(hours=1)
    with session_scope(session_factory) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id == ids[0])
            .values(status="sending", claim_token="dead", claimed_at=long_ago)
        )
    result = send(campaign_id, ids[0], ids[-1])
    assert result.orphaned == 1  # type: ignore[attr-defined]
    assert ADDRESSES[0] not in sent_to(smtp_sink)
    assert details(session_factory, campaign_id)[ADDRESSES[0]][:2] == (
        "unknown",
        "outcome_hidden_by_crash",
    )
    assert campaign_status(session_factory, campaign_id) == "done"


def test_only_dead_claims_inside_the_batch_are_taken_for_orphans(
    session_factory: sessionmaker[Session],
) -> None:
    """A claim is dead when neither its renewal nor the claim itself is within the lease; only
    this campaign's rows of this batch, still ``sending`` under another token, qualify."""
    campaign_id, ids = sending_campaign(session_factory)
    with session_scope(session_factory) as session:
        other_campaign, other_ids = make_sending_campaign(session)
    long_ago, just_now = utcnow() - timedelta(hours=1), utcnow()
    dead = {"status": "sending", "claim_token": "dead", "claimed_at": long_ago}
    setups = {
        ids[0]: dead,  # outside the batch below
        ids[1]: dead,  # an orphan
        ids[5]: dead,  # another
        ids[2]: {**dead, "renewed_at": just_now},  # alive: renewed within the lease
        ids[3]: {**dead, "claim_token": "mine"},  # this execution's own claim
        ids[4]: {**dead, "status": "queued"},  # not being sent
        other_ids[0]: dead,  # another campaign's row inside the id range
    }
    with session_scope(session_factory) as session:
        for delivery_id, values in setups.items():
            session.execute(update(Delivery).where(Delivery.id == delivery_id).values(**values))
        for campaign in (campaign_id, other_campaign):
            counts.rebuild(session, campaign)
    with session_scope(session_factory) as session:
        orphaned = orphan_stale_claims(
            session, campaign_id, ids[1], other_ids[-1], "mine", lease_seconds=60
        )
    assert orphaned == 2
    with session_factory() as session:
        after = {
            i: (status, reason, finished is not None)
            for i, status, reason, finished in session.execute(
                select(
                    Delivery.id, Delivery.status, Delivery.skip_reason, Delivery.finished_at
                ).where(Delivery.id.in_(setups))
            )
        }
    assert after.pop(ids[1]) == after.pop(ids[5]) == ("unknown", "outcome_hidden_by_crash", True)
    assert {status for status, _, _ in after.values()} == {"sending", "queued"}
    assert_counters_match(session_factory)


def campaign_status(sessions: sessionmaker[Session], campaign_id: int) -> str | None:
    with sessions() as session:
        return session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))


def campaign_with_eve(sessions: sessionmaker[Session], *first: str) -> tuple[int, list[int]]:
    """sending_campaign with, before ADDRESSES, the contacts ``first`` and then Eve, whose
    name would break a header: the subject carries the name, so her message cannot be built."""
    with session_scope(sessions) as session:
        for address in first:
            make_contact(session, address)
        make_contact(session, "eve@example.com", first_name="Eve\r\nBcc: x@evil.example")
    campaign_id, ids = sending_campaign(sessions)
    with session_scope(sessions) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(subject="{{ greeting_name }}, new music")
        )
    return campaign_id, ids


def test_a_recipient_whose_data_would_break_a_header_is_failed_and_the_rest_go(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    campaign_id, ids = campaign_with_eve(session_factory)
    send(campaign_id, ids[0], ids[-1])
    assert sent_to(smtp_sink) == sorted(ADDRESSES)
    status, reason, error, *_ = details(session_factory, campaign_id)["eve@example.com"]
    assert (status, reason) == ("failed", "render_error")
    assert error.startswith("not sent: ") and "header" in error
    assert campaign_status(session_factory, campaign_id) == "done"
    assert_counters_match(session_factory)


def test_each_next_message_is_announced_with_the_one_before_and_each_goes_once(
    to_sink: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    """One round trip a message: when a message goes, the server has already answered the
    next one's RCPT (sent with the last one's end). A row whose message cannot be built is
    never announced, and the row after it goes the plain way."""
    from suppression.tokens import TokenSigner

    campaign_id, ids = campaign_with_eve(session_factory, "a0@example.com")
    announced: list[tuple[str, bool]] = []

    def look(row) -> None:  # type: ignore[no-untyped-def]
        announced.append((row.address, row.address in smtp_sink.recipients_seen()))

    send_batch(
        to_sink,
        session_factory,
        TokenSigner(to_sink.secret_keys),
        campaign_id,
        min(ids),
        max(ids),
        before_send=look,
    )
    order = ["a0@example.com", *ADDRESSES]
    assert announced == [("a0@example.com", False), (ADDRESSES[0], False)] + [
        (address, True) for address in ADDRESSES[1:]
    ]
    assert smtp_sink.recipients_seen() == order  # each RCPT once, eve's never
    assert [r.recipients for r in smtp_sink.wait_for_count(len(order))] == [[a] for a in order]
    assert smtp_sink.connections == 1
    assert details(session_factory, campaign_id)["eve@example.com"][:2] == (
        "failed",
        "render_error",
    )
    assert_counters_match(session_factory)


def test_a_render_failure_and_a_refusal_in_one_batch_keep_their_own_reasons(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    smtp_sink.reject(ADDRESSES[2], "550 5.1.1 mailbox unavailable")
    campaign_id, ids = campaign_with_eve(session_factory)
    send(campaign_id, ids[0], ids[-1])
    after = details(session_factory, campaign_id)
    assert after["eve@example.com"][:2] == ("failed", "render_error")
    assert after[ADDRESSES[2]][:2] == ("failed", "hard_bounce")
    assert_counters_match(session_factory)


def test_a_rate_limited_batch_is_paced_and_sends_everything(
    to_sink: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    from suppression.tokens import TokenSigner

    paced = to_sink.replace(rate_per_second=600.0, domain_rate_per_second=200.0)
    campaign_id, ids = sending_campaign(session_factory)
    send_batch(paced, session_factory, TokenSigner(paced.secret_keys), campaign_id, ids[0], ids[-1])
    assert sent_to(smtp_sink) == sorted(ADDRESSES)
    with session_factory() as session:
        found = session.execute(select(RateLimit.key, RateLimit.last_cost))
        reserved = {key: cost for key, cost in found}
    # The pacing went through the shared rate-limit table, each limit under its own key; a
    # reservation's cost is its messages over the limit's rate (the last one is kept).
    assert set(reserved) == {"global", "domain:example.com"}
    assert reserved["domain:example.com"] == pytest.approx(3 * reserved["global"])


def test_a_long_refusal_is_kept_to_500_characters(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    smtp_sink.reject(ADDRESSES[0], "550 5.1.1 " + "x" * 480)
    campaign_id, ids = sending_campaign(session_factory)
    send(campaign_id, ids[0], ids[-1])
    error = details(session_factory, campaign_id)[ADDRESSES[0]][2]
    assert len(error) == 500 and error.startswith("refused by the mail server:")


def test_a_relay_closing_the_connection_puts_the_rest_of_the_batch_back(
    session_factory: sessionmaker[Session], smtp_sink: SmtpSink, send
) -> None:
    """421: the relay is going away. Nothing more is tried over this connection; every row
    not yet sent goes back to the queue for the retry."""
    smtp_sink.tempfail_next(1, "421 4.3.2 shutting down")
    campaign_id, ids = sending_campaign(session_factory)
    with pytest.raises(RetryLater, match=f"{len(ADDRESSES)} messages put back") as caught:
        send(campaign_id, ids[0], ids[-1])
    assert "421" in str(caught.value.__cause__)
    assert sent_to(smtp_sink) == []
    assert {(r[0], r[4]) for r in details(session_factory, campaign_id).values()} == {
        ("queued", None)
    }
    assert_counters_match(session_factory)


def put_back(
    settings: Settings,
    sessions: sessionmaker[Session],
    campaign_id: int,
    ids: list[int],
    count: int,
    before_send: Callable[[object], None] | None = None,
) -> BaseException | None:
    """``send_batch`` over ``ids``, which must end in ``RetryLater`` for ``count`` rows put
    back in the queue; returns what caused it."""
    with pytest.raises(RetryLater, match=f"{count} messages put back") as caught:
        send_ids(settings, sessions, campaign_id, ids, before_send)
    return caught.value.__cause__


def send_ids(
    settings: Settings,
    sessions: sessionmaker[Session],
    campaign_id: int,
    ids: list[int],
    before_send: Callable[[Any], None] | None = None,
) -> BatchResult:
    """``send_batch`` over the batch from ``ids[0]`` to ``ids[-1]``."""
    from suppression.tokens import TokenSigner

    signer = TokenSigner(settings.secret_keys)
    return send_batch(
        settings, sessions, signer, campaign_id, ids[0], ids[-1], before_send=before_send
    )


def refusing(engine, needle: str):  # type: ignore[no-untyped-def]
    """While its ``gone`` is set, statements containing ``needle`` (a table, the start of a
    statement) fail as with the database away (an ``OperationalError``); removed when the
    block ends."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    gone = {"now": False}

    def refuse(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if gone["now"] and needle in statement:
            raise OperationalError(statement, None, Exception("database went away"))

    @contextlib.contextmanager
    def listening():  # type: ignore[no-untyped-def]
        event.listen(engine, "before_cursor_execute", refuse)
        try:
            yield gone
        finally:
            event.remove(engine, "before_cursor_execute", refuse)

    return listening()


@pytest.mark.parametrize(
    ("needle", "change"),
    [
        # A lease this short is renewed before every message.
        ("UPDATE deliveries SET renewed_at", {"claim_lease_seconds": 0.004}),
        # At a million a second every slot is behind the sender: each message reserves anew.
        ("rate_limits", {"rate_per_second": 1_000_000.0}),
    ],
    ids=["the lease's renewal", "a paced sender's new slots"],
)
def test_losing_the_database_mid_batch_stops_sending_and_records_what_left(
    needle: str,
    change: dict[str, float],
    to_sink: Settings,
    session_factory: sessionmaker[Session],
    smtp_sink: SmtpSink,
) -> None:
    """Between two messages a batch looks at the database: it renews its lease and, when
    paced and behind its slots, reserves new ones. When that fails (the database answers no
    more), nothing more is sent; the outcome already known is recorded once the database
    answers, the rest goes back to the queue."""
    from sqlalchemy.exc import OperationalError

    settings = to_sink.replace(**change)
    campaign_id, ids = sending_campaign(session_factory)
    with refusing(session_factory.kw["bind"], needle) as gone:

        def after_the_first(row) -> None:  # type: ignore[no-untyped-def]
            gone["now"] = True

        cause = put_back(
            settings, session_factory, campaign_id, ids, len(ADDRESSES) - 1, after_the_first
        )
    assert isinstance(cause, OperationalError)
    assert sent_to(smtp_sink) == [ADDRESSES[0]]
    after = details(session_factory, campaign_id)
    assert after[ADDRESSES[0]][0] == "sent"
    assert {(after[a][0], after[a][4]) for a in ADDRESSES[1:]} == {("queued", None)}
    assert_counters_match(session_factory)


def test_a_database_gone_while_reading_the_render_claims_nothing(
    to_sink: Settings,
    session_factory: sessionmaker[Session],
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the messages need (the render stored for the campaign, read by a process's
    first batch of it) is read before the claim: with the database gone there, nothing is
    claimed or sent and the error goes to the task, which retries."""
    from sqlalchemy.exc import OperationalError

    from dispatcher.sending import composing

    monkeypatch.setattr(composing, "_prepared", {})  # this process has not prepared it yet
    campaign_id, ids = sending_campaign(session_factory)
    with refusing(session_factory.kw["bind"], "campaign_renders") as gone:
        gone["now"] = True
        with pytest.raises(OperationalError):
            send_ids(to_sink, session_factory, campaign_id, ids)
    assert sent_to(smtp_sink) == []
    after = details(session_factory, campaign_id)
    assert {(after[a][0], after[a][4]) for a in ADDRESSES} == {("queued", None)}
    assert_counters_match(session_factory)


def test_a_database_gone_before_the_first_message_sends_nothing_and_puts_all_back(
    to_sink: Settings,
    session_factory: sessionmaker[Session],
    smtp_sink: SmtpSink,
) -> None:
    """Between the claim and its first message a paced batch reserves its first slots in
    the database. With the database gone there, nothing is sent and every claimed row goes
    back to the queue (not left ``sending``, which the next execution would take for sent
    and mark ``unknown``)."""
    from sqlalchemy.exc import OperationalError

    settings = to_sink.replace(rate_per_second=600.0)
    campaign_id, ids = sending_campaign(session_factory)
    with refusing(session_factory.kw["bind"], "rate_limits") as gone:
        gone["now"] = True
        cause = put_back(settings, session_factory, campaign_id, ids, len(ADDRESSES))
    assert isinstance(cause, OperationalError)
    assert sent_to(smtp_sink) == []
    after = details(session_factory, campaign_id)
    assert {(after[a][0], after[a][4]) for a in ADDRESSES} == {("queued", None)}
    assert_counters_match(session_factory)


def test_the_task_result_counts_each_outcome_under_its_own_name() -> None:
    result = BatchResult(
        claimed=9, skipped=1, sent=[1, 2], failed={3: "x"}, released=[4, 5, 6], unknown=[7]
    )
    result.orphaned = 8
    assert describe(result) == {
        "claimed": 9,
        "skipped": 1,
        "sent": 2,
        "failed": 1,
        "released": 3,
        "unknown": 1,
        "orphaned": 8,
    }


def test_the_lease_renews_this_executions_rows_only(
    to_sink: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    """With a lease short enough to renew before every message, each row this execution sent
    was renewed while it held it; rows another live execution holds in the same batch keep
    their own renewal time (a renewal of theirs would keep a dead claim alive)."""
    from suppression.tokens import TokenSigner

    campaign_id, ids = sending_campaign(session_factory)
    held, theirs_renewed = ids[1::2], utcnow() + timedelta(days=1)  # live: never orphaned
    with session_scope(session_factory) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(held))
            .values(
                status=DeliveryStatus.SENDING.value,
                claim_token="other",
                claimed_at=utcnow(),
                renewed_at=theirs_renewed,
            )
        )
    fast_lease = to_sink.replace(claim_lease_seconds=0.004)
    started = utcnow()
    send_batch(
        fast_lease,
        session_factory,
        TokenSigner(fast_lease.secret_keys),
        campaign_id,
        ids[0],
        ids[-1],
    )
    with session_factory() as session:
        found = session.execute(
            select(Delivery.id, Delivery.renewed_at).where(Delivery.campaign_id == campaign_id)
        )
        renewed = {delivery_id: at for delivery_id, at in found}
    mine = [i for i in ids if i not in held]
    assert len(sent_to(smtp_sink)) == len(mine)
    assert all(renewed[i] is not None and renewed[i] >= started for i in mine), renewed
    assert all(renewed[i] == theirs_renewed for i in held), renewed


def test_the_first_message_goes_without_a_renewal_before_it(
    to_sink: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    """Renewals are spaced (every 2 s under the default 120 s lease), not one per message: the
    claim is fresh when the first message leaves, so nothing has been renewed yet."""
    from suppression.tokens import TokenSigner

    seen: list[set[object]] = []

    def look(row) -> None:  # type: ignore[no-untyped-def]
        if not seen:
            with session_factory() as session:
                seen.append(set(session.scalars(select(Delivery.renewed_at)).all()))

    campaign_id, ids = sending_campaign(session_factory)
    signer = TokenSigner(to_sink.secret_keys)
    send_batch(to_sink, session_factory, signer, campaign_id, ids[0], ids[-1], before_send=look)
    assert seen == [{None}] and len(sent_to(smtp_sink)) == len(ADDRESSES)


def test_a_lease_is_renewed_at_a_quarter_of_its_length_and_at_least_every_2_seconds() -> None:
    """Losing the database stops sending within seconds, whatever the lease (README)."""
    batch = Delivery.id.between(1, 10)
    assert _Lease(None, "t", 4.0, batch, held=1, since=0.0).every == 1.0  # type: ignore[arg-type]
    assert _Lease(None, "t", 120.0, batch, held=1, since=0.0).every == 2.0  # type: ignore[arg-type]


def test_recording_outcomes_retries_with_growing_jittered_waits_then_gives_up(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once messages have left only this process knows it: a database that fails to take the
    outcomes is asked again 8 times, waiting 0.5 s doubling to at most 10 s, plus up to half
    as much again at random; the eighth failure is raised (the rows stay ``sending``)."""
    from sqlalchemy.exc import OperationalError

    from dispatcher.sending import batch

    failures = {"left": 3}
    recorded: list[BatchResult] = []

    def flaky_record(session, campaign_id, claim_token, result) -> None:  # type: ignore[no-untyped-def]
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("UPDATE deliveries", None, Exception("database went away"))
        recorded.append(result)

    jitter: list[tuple[float, float]] = []
    slept: list[float] = []
    monkeypatch.setattr(batch, "_record", flaky_record)
    monkeypatch.setattr(batch.random, "uniform", lambda a, b: jitter.append((a, b)) or b)
    monkeypatch.setattr(batch.time, "sleep", slept.append)
    outcome = BatchResult(sent=[1])
    batch._record_durably(session_factory, 1, "mine", outcome)
    assert recorded == [outcome]
    assert jitter == [(0, 0.25), (0, 0.5), (0, 1.0)]
    assert slept == [0.75, 1.5, 3.0]

    failures["left"], jitter[:], slept[:] = 100, [], []
    with pytest.raises(OperationalError):
        batch._record_durably(session_factory, 1, "mine", outcome)
    assert failures["left"] == 100 - 8 and len(slept) == 7
    assert jitter == [(0, wait / 2) for wait in (0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0)]
    assert slept == [0.75, 1.5, 3.0, 6.0, 12.0, 15.0, 15.0]  # 10 s, plus its half at most


def test_the_relay_connection_uses_the_configured_timeout(
    to_sink: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink, monkeypatch
) -> None:
    """A relay that stops answering holds a batch for smtp_timeout_seconds, not a default."""
    from dispatcher.sending import batch
    from suppression.tokens import TokenSigner

    opened: list[dict[str, object]] = []
    real = batch.reused_transport

    def recording(url: str, **kwargs: object):  # type: ignore[no-untyped-def]
        opened.append(kwargs)
        return real(url, **kwargs)

    monkeypatch.setattr(batch, "reused_transport", recording)
    patient = to_sink.replace(smtp_timeout_seconds=7.5)
    campaign_id, ids = sending_campaign(session_factory)
    send_batch(
        patient, session_factory, TokenSigner(patient.secret_keys), campaign_id, ids[0], ids[-1]
    )
    assert opened == [{"timeout": 7.5}]
    assert sent_to(smtp_sink) == sorted(ADDRESSES)


def test_a_transport_failing_outside_a_send_puts_back_only_what_was_not_sent(
    to_sink: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    """The transport gives up between two messages (as when opening or closing the connection
    fails): the messages that left stay sent, the failed and unknown keep their outcome, and
    only the rest goes back to the queue."""
    from dispatcher.sending.transports import TransientSendError
    from suppression.tokens import TokenSigner

    smtp_sink.reject(ADDRESSES[1], "550 5.1.1 mailbox unavailable")
    smtp_sink.drop_connection_after_data(1)  # the first message: outcome unknown
    seen: list[int] = []

    def give_up_at_the_fifth(row) -> None:  # type: ignore[no-untyped-def]
        seen.append(row.delivery_id)
        if len(seen) == 5:
            raise TransientSendError("connection could not be reopened")

    campaign_id, ids = sending_campaign(session_factory)
    with pytest.raises(RetryLater, match="2 messages put back") as caught:
        send_batch(
            to_sink,
            session_factory,
            TokenSigner(to_sink.secret_keys),
            campaign_id,
            ids[0],
            ids[-1],
            before_send=give_up_at_the_fifth,
        )
    assert "could not be reopened" in str(caught.value.__cause__)
    after = {a: row[0] for a, row in details(session_factory, campaign_id).items()}
    assert after == {
        ADDRESSES[0]: "unknown",
        ADDRESSES[1]: "failed",
        ADDRESSES[2]: "sent",
        ADDRESSES[3]: "sent",
        ADDRESSES[4]: "queued",
        ADDRESSES[5]: "queued",
    }
    assert_counters_match(session_factory)
