"""A batch sends only rows its claim still holds, and whatever stops it, what left is on
record (ARCHITECTURE.md, invariant 3: at most once; ``unknown`` only where a message may
have left).

Found by a red-team pass (h/redteam-send): a paced batch slept past its lease waiting for
a slot behind other workers' reservations, the beat marked its rows ``unknown``, and it
then sent them all (resend-unknown mailed each person twice); and an error nobody expected
(a template broken since scheduling, a signing key that is no key, Celery's soft time
limit) left the batch before its outcomes were recorded.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.recovery import expire_dead_claims
from dispatcher.db import session_scope
from dispatcher.models import Delivery, RateLimit
from dispatcher.sending import batch
from dispatcher.sending.batch import LeaseLost, RetryLater
from dispatcher.sending.rendering import TemplateProblem
from dispatcher.settings import Settings
from tests.factories import make_contact, make_sending_campaign
from tests.support.smtp_sink import SmtpSink
from tests.unit.dispatcher.sending.test_batch import (
    ADDRESSES,
    assert_counters_match,
    details,
    send_ids,
    sending_campaign,
    sent_to,
)

LEASE = 0.4  # renewed every 0.1 s


@pytest.fixture
def to_sink(settings: Settings, smtp_sink: SmtpSink) -> Settings:
    return settings.replace(mail_url=smtp_sink.url, claim_lease_seconds=LEASE)


def statuses(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, str]:
    return {a: row[0] for a, row in details(sessions, campaign_id).items()}


@contextmanager
def beat(sessions: sessionmaker[Session]) -> Iterator[list[int]]:
    """The beat's dead-claim sweep (``recover_stalled``), every 20 ms while the block runs;
    yields the campaigns it touched."""
    touched: list[int] = []
    stop = threading.Event()

    def sweep() -> None:
        while not stop.wait(0.02):
            with session_scope(sessions) as session:
                touched.extend(expire_dead_claims(session, LEASE))

    thread = threading.Thread(target=sweep, daemon=True)
    thread.start()
    try:
        yield touched
    finally:
        stop.set()
        thread.join(10)


def test_a_paced_batch_keeps_its_claim_while_it_waits_for_its_first_slot(
    to_sink: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    """Other workers hold the global rate's next second (more than twice the lease): the
    batch waits for its slot renewing its claim, so the beat's sweep, running all along,
    takes nothing for dead; each person gets one message, recorded ``sent``."""
    campaign_id, ids = sending_campaign(session_factory)
    with session_scope(session_factory) as session:
        session.add(RateLimit(key="global", next_at=time.time() + 1.0, last_cost=1.0))
    paced = to_sink.replace(rate_per_second=100.0)
    started = time.monotonic()
    with beat(session_factory) as touched:
        send_ids(paced, session_factory, campaign_id, ids)
    assert time.monotonic() - started >= 1.0  # it did wait behind the others' slots
    assert touched == []
    assert Counter(sent_to(smtp_sink)) == Counter(ADDRESSES)
    assert set(statuses(session_factory, campaign_id).values()) == {"sent"}
    assert_counters_match(session_factory)


def test_a_batch_whose_claim_ran_out_sends_nothing_more(
    to_sink: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    """The relay stalls before the second message for longer than the lease, and the sweep
    takes the batch's rows for dead (``unknown``: never resent by itself). The message in
    hand still goes (its claim was checked before the stall); the batch then finds its
    claim gone and sends none of the rest, though the next one's envelope had already
    been announced to the relay with the second's end."""
    campaign_id, ids = sending_campaign(session_factory)
    seen: list[int] = []

    def stall_at_the_second(row: Any) -> None:
        seen.append(row.delivery_id)
        if len(seen) == 2:
            time.sleep(LEASE + 0.1)  # the relay not answering
            with session_scope(session_factory) as session:
                assert expire_dead_claims(session, LEASE) == [campaign_id]

    with pytest.raises(RetryLater) as caught:
        send_ids(to_sink, session_factory, campaign_id, ids, stall_at_the_second)
    assert isinstance(caught.value.__cause__, LeaseLost)
    assert str(caught.value.__cause__) == (
        "only 0 of the batch's 6 rows are still this execution's: its claim ran out"
    )
    assert sent_to(smtp_sink) == ADDRESSES[:2]
    # The sweep's verdict stands: nothing of this execution's is written over it.
    assert set(statuses(session_factory, campaign_id).values()) == {"unknown"}
    assert_counters_match(session_factory)


def test_an_error_nobody_expected_mid_batch_keeps_what_left_and_puts_back_the_rest(
    to_sink: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink
) -> None:
    """Celery's soft time limit (or any exception the send loop does not know) before the
    third message: the two that left are ``sent``, the rest go back to the queue, and the
    exception goes on to the task."""
    campaign_id, ids = sending_campaign(session_factory)
    seen: list[int] = []

    def time_is_up_at_the_third(row: Any) -> None:
        seen.append(row.delivery_id)
        if len(seen) == 3:
            raise SoftTimeLimitExceeded()

    with pytest.raises(SoftTimeLimitExceeded):
        send_ids(to_sink, session_factory, campaign_id, ids, time_is_up_at_the_third)
    assert sent_to(smtp_sink) == ADDRESSES[:2]
    after = statuses(session_factory, campaign_id)
    assert [after[a] for a in ADDRESSES] == ["sent"] * 2 + ["queued"] * 4
    assert_counters_match(session_factory)


def test_an_error_while_the_relay_has_the_message_leaves_it_unknown(
    to_sink: Settings,
    session_factory: sessionmaker[Session],
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The time limit strikes once the third message is with the relay and before the send
    loop hears how it went: that message may have left, so its row is ``unknown`` (never
    resent by itself), not back in the queue."""
    real = batch.reused_transport
    calls: list[str] = []

    @contextmanager
    def interrupted_after_the_third(url: str, **kwargs: Any) -> Iterator[Any]:
        with real(url, **kwargs) as transport:
            send = transport.send

            def sending(*args: Any, **more: Any) -> None:
                send(*args, **more)
                calls.append(args[1])
                if len(calls) == 3:
                    raise SoftTimeLimitExceeded()

            transport.send = sending
            yield transport

    monkeypatch.setattr(batch, "reused_transport", interrupted_after_the_third)
    campaign_id, ids = sending_campaign(session_factory)
    with pytest.raises(SoftTimeLimitExceeded):
        send_ids(to_sink, session_factory, campaign_id, ids)
    assert sent_to(smtp_sink) == ADDRESSES[:3]
    after = statuses(session_factory, campaign_id)
    assert [after[a] for a in ADDRESSES] == ["sent"] * 2 + ["unknown"] + ["queued"] * 3
    assert_counters_match(session_factory)


def test_a_template_broken_since_scheduling_sends_nothing_and_puts_every_row_back(
    to_sink: Settings,
    session_factory: sessionmaker[Session],
    smtp_sink: SmtpSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process whose templates differ from the stored render's prepares the campaign
    itself (README); a template edited into an error since scheduling fails there, before
    any message: every claimed row goes back to the queue and the error reaches the task
    (which records it on the campaign), instead of rows left ``sending`` to be marked
    ``unknown``."""
    import shutil

    from dispatcher.sending import composing

    templates = tmp_path / "templates"
    shutil.copytree(to_sink.templates_dir, templates)
    (templates / "email" / "new-releases" / "body.html").write_text("{% if %}broken")
    monkeypatch.setattr(composing, "_prepared", {})  # this process has not prepared it yet
    edited = to_sink.replace(templates_dir=templates)
    campaign_id, ids = sending_campaign(session_factory)
    with pytest.raises(TemplateProblem):
        send_ids(edited, session_factory, campaign_id, ids)
    assert sent_to(smtp_sink) == []
    assert set(statuses(session_factory, campaign_id).values()) == {"queued"}
    assert_counters_match(session_factory)


def test_a_signing_key_that_is_no_key_sends_nothing_and_puts_every_row_back(
    to_sink: Settings, session_factory: sessionmaker[Session], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """A DKIM key file that reads (the settings' check passes) but holds a public key: the
    first message cannot be built, nothing is sent, every row goes back to the queue and
    the error reaches the task."""
    key = tmp_path / "dkim.pem"
    key.write_bytes(b"-----BEGIN PUBLIC KEY-----\nMFkwEw==\n-----END PUBLIC KEY-----\n")
    signing = to_sink.replace(dkim_key_file=str(key))
    with session_scope(session_factory) as session:
        for address in ADDRESSES:
            make_contact(session, address)
        campaign_id, ids = make_sending_campaign(session)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the signing library's own error
        send_ids(signing, session_factory, campaign_id, ids)
    assert not isinstance(caught.value, RetryLater)
    assert sent_to(smtp_sink) == []
    with session_factory() as session:
        left = Counter(
            session.scalars(select(Delivery.status).where(Delivery.campaign_id == campaign_id))
        )
    assert left == Counter({"queued": len(ADDRESSES)})
    assert_counters_match(session_factory)
