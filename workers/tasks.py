"""Celery tasks. Each receives ids, calls one service function, and is safe to run twice.

The hourly and inbound tasks import their services when they run: a pool process that only
sends does not carry the inbound parsers, retention and signup code in its memory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.exc import OperationalError

from dispatcher.campaigns.counts import fold_busy
from dispatcher.campaigns.fanout import (
    Batches,
    Publish,
    campaign_purpose,
    due_campaigns,
    fan_out,
    refill,
    refill_after,
    sending_campaigns,
)
from dispatcher.campaigns.problems import FAN_OUT, SEND_BATCH, START, recording_errors
from dispatcher.campaigns.recovery import stalled_campaigns
from dispatcher.db import session_scope
from dispatcher.sending.batch import describe, send_batch
from dispatcher.sending.transports import TransientSendError
from suppression.audit import seal_events
from workers.app import NOTICES_SUFFIX, app, queue_for
from workers.runtime import runtime

log = logging.getLogger(__name__)


@app.task(name="workers.tasks.start_due_campaigns")
def start_due_campaigns() -> list[int]:
    """Beat: publish a fan-out for every scheduled campaign whose time has come."""
    rt = runtime()
    with session_scope(rt.sessions) as session:
        due = due_campaigns(session)
    for campaign_id in due:
        with recording_errors(rt.sessions, campaign_id, START):
            fan_out_campaign.delay(campaign_id)
    return due


@app.task(
    name="workers.tasks.fan_out_campaign",
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=20,
)
def fan_out_campaign(campaign_id: int, resume: bool = False) -> int:
    """Create the campaign's delivery rows, then publish the first window of ``send_batch``
    tasks (the batches themselves, and beat, publish the rest as they finish).

    ``fan_out`` commits the rows before it publishes the first batch (enqueue after commit),
    and publishes each window before committing the mark that covers it.
    """
    rt = runtime()
    count = 0
    with recording_errors(rt.sessions, campaign_id, FAN_OUT, resolves=(START,)):
        batches = fan_out(
            rt.sessions,
            campaign_id,
            rt.settings.batch_size,
            window=rt.settings.batch_window,
            resume=resume,
            publish=_publisher(campaign_id, _queue(campaign_id)),
        )
        count = sum(1 for _ in batches)
    return count


def _queue(campaign_id: int, came_from: str | None = None) -> str:
    """``came_from`` if it is one of this fleet's send queues, else the queue of the
    campaign's purpose."""
    default = app.conf.task_default_queue
    if came_from is not None and came_from in (default, default + NOTICES_SUFFIX):
        return came_from
    with session_scope(runtime().sessions) as session:
        purpose = campaign_purpose(session, campaign_id)
    return queue_for(default, purpose)


def _publisher(campaign_id: int, queue: str) -> Publish:
    """One ``send_batch`` per batch on ``queue``; the fan-out calls it before it commits
    the published mark, so a publish that fails leaves the batches to the next refill."""

    def publish(batches: Batches) -> None:
        for first_id, last_id in batches:
            send_batch_task.apply_async((campaign_id, first_id, last_id), queue=queue)

    return publish


def _refill(campaign_id: int) -> int:
    """Top up the campaign's window of published batches; returns how many were added."""
    rt = runtime()
    publish = _publisher(campaign_id, _queue(campaign_id))
    size, window = rt.settings.batch_size, rt.settings.batch_window
    return len(refill(rt.sessions, campaign_id, size, window, publish))


@app.task(
    name="workers.tasks.send_batch",
    autoretry_for=(TransientSendError, OperationalError),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=12,
)
def send_batch_task(campaign_id: int, first_id: int, last_id: int) -> dict[str, int]:
    rt = runtime()
    with recording_errors(rt.sessions, campaign_id, SEND_BATCH, first_id, last_id):
        result = send_batch(rt.settings, rt.sessions, rt.signer, campaign_id, first_id, last_id)
    # This batch ran to its end and left the broker: its successor takes its place, on the
    # same queue. A batch that raised is retried (it still waits) and refills nothing; beat
    # redoes a refill lost here (database or broker away, worker killed): the successor is
    # published before the mark moves, so a failed publish leaves it to beat's next refill.
    came_from = (send_batch_task.request.delivery_info or {}).get("routing_key")
    try:
        publish = _publisher(campaign_id, _queue(campaign_id, came_from))
        refill_after(rt.sessions, campaign_id, first_id, rt.settings.batch_size, publish)
    except Exception:  # noqa: BLE001 — the batch's own outcome must not be masked
        log.warning("campaign %s: refilling its batch window failed", campaign_id, exc_info=True)
    return describe(result)


@app.task(name="workers.tasks.refill_windows")
def refill_windows() -> int:
    """Beat: top up every sending campaign's window of published batches (the safety net
    for a refill a batch could not make)."""
    rt = runtime()
    with session_scope(rt.sessions) as session:
        campaigns = sending_campaigns(session)
    return sum(_refill(campaign_id) for campaign_id in campaigns)


@app.task(name="workers.tasks.recover_stalled")
def recover_stalled() -> list[int]:
    """Beat: re-queue campaigns whose batches were lost (published before a crash, retries
    exhausted). Re-publishing is safe: a batch is claimed once."""
    rt = runtime()
    with session_scope(rt.sessions) as session:
        stalled = stalled_campaigns(
            session, rt.settings.claim_lease_seconds, rt.settings.stall_seconds
        )
    for campaign_id in stalled:
        fan_out_campaign.delay(campaign_id, resume=True)
    return stalled


@app.task(name="workers.tasks.fold_counts")
def fold_counts() -> int:
    """Beat: merge the campaign counters' ledger rows per minute (the sums do not change)."""
    rt = runtime()
    with session_scope(rt.sessions) as session:
        return fold_busy(session)


@app.task(name="workers.tasks.seal_audit")
def seal_audit() -> int:
    """Beat: seal the audit events written since the last pass into the hash chain."""
    rt = runtime()
    with session_scope(rt.sessions) as session:
        return seal_events(session)


@app.task(name="workers.tasks.apply_retention")
def apply_retention_task() -> dict[str, int]:
    """Beat: remove personal data past its retention window."""
    from dispatcher.privacy.retention import apply_retention

    rt = runtime()
    with session_scope(rt.sessions) as session:
        return apply_retention(session, rt.settings).as_dict()


@app.task(name="workers.tasks.prune_signups")
def prune_signups() -> tuple[int, int]:
    """Beat, hourly: forget unconfirmed signups whose link expired, and spent counters."""
    from dispatcher.signup.services import prune as signup_prune

    rt = runtime()
    with session_scope(rt.sessions) as session:
        return signup_prune(session, rt.settings)


@app.task(name="workers.tasks.read_inbound_mailboxes")
def read_inbound_mailboxes() -> dict[str, int]:
    """Beat: apply what arrived in the configured maildir and IMAP mailbox. Safe to run
    twice: each message is recorded once under its Message-ID."""
    from dispatcher.inbound.sources import poll_imap, poll_maildir

    rt = runtime()
    counts: dict[str, int] = {}
    if rt.settings.inbound_maildir:
        tally = poll_maildir(rt.sessions, rt.settings, rt.signer, Path(rt.settings.inbound_maildir))
        for key, n in tally.counts.items():
            counts[key] = counts.get(key, 0) + n
    if rt.settings.inbound_imap_url:
        tally = poll_imap(rt.sessions, rt.settings, rt.signer, rt.settings.inbound_imap_url)
        for key, n in tally.counts.items():
            counts[key] = counts.get(key, 0) + n
    return counts
