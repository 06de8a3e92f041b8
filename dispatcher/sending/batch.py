"""Sending one batch: claim through the gate, render, hand to the transport, record.

The order of those steps is the product's core promise (ARCHITECTURE.md, invariants 1–3):

1. **claim** — one UPDATE moves the batch's ``queued`` rows to ``sending`` and, in the same
   statement, applies the gate: rows that fail it become ``suppressed`` with the reason. Only
   rows this execution claimed (its own ``claim_token``) are ever sent. An error anywhere in
   the statement claims nothing, so nothing is sent (fail closed).
2. **send** — each claimed row is rendered and handed to the transport once.
3. **record** — outcomes are written per row; rows a transient error kept from being sent go
   back to ``queued`` (the gate is applied again when they are next claimed); rows whose fate
   a lost connection hid become ``unknown`` and are never resent without staff asking.

A redelivered task (worker killed, broker restarted) finds rows another execution claimed
still ``sending``: their outcome is hidden, so they become ``unknown`` instead of being resent.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import Counter as CountOf
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    Select,
    Update,
    and_,
    any_,
    bindparam,
    case,
    select,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns import counts
from dispatcher.campaigns.lifecycle import finish_if_done
from dispatcher.db import session_scope
from dispatcher.models import Campaign, CampaignStatus, Contact, Delivery, DeliveryStatus
from dispatcher.ops import metrics
from dispatcher.sending import throttle
from dispatcher.sending.composing import ClaimedRow, MessageFactory
from dispatcher.sending.messages import HeaderInjection
from dispatcher.sending.prebuild import BuiltWhileWaiting
from dispatcher.sending.rendering import (
    TemplateProblem,
)
from dispatcher.sending.stages import Stopwatch
from dispatcher.sending.transports import (
    NeedsSmtpUtf8,
    PermanentSendError,
    TransientSendError,
    Transport,
    UncertainSendError,
    reused_transport,
)
from dispatcher.settings import Settings
from suppression.address import InvalidAddress, delivery_address, is_delivery_form_of
from suppression.gate import Purpose, blocking_reason
from suppression.models import Address, Reason, utcnow
from suppression.sql import built_once
from suppression.suppressions import add_suppression
from suppression.tokens import TokenSigner

log = logging.getLogger(__name__)

_RECORD_ATTEMPTS = 8
BUILDER: Any = BuiltWhileWaiting  # bench/overlap.py swaps in the ways it compares


class RetryLater(TransientSendError):
    """Some rows of the batch could not be sent now and were put back in the queue."""


class LeaseLost(Exception):
    """This execution's claim ran out: another took its rows for dead (``unknown``), so it
    may not send them."""


@dataclass
class BatchResult:
    claimed: int = 0
    skipped: int = 0
    sent: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    bounced: dict[int, int] = field(default_factory=dict)  # delivery id -> address id
    # failed delivery id -> its skip_reason, when not "render_error"
    reasons: dict[int, str] = field(default_factory=dict)
    released: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    orphaned: int = 0
    skip_reasons: CountOf[str] = field(default_factory=CountOf)
    # Why rows went back to the queue: the cause of RetryLater, for the campaign's record.
    problem: BaseException | None = None
    # The row handed to the transport and not yet told apart: if anything escapes now, its
    # message may have left (``unknown``, never resent).
    in_flight: int | None = None


def orphan_stale_claims(
    session: Session,
    campaign_id: int,
    first_id: int,
    last_id: int,
    claim_token: str,
    lease_seconds: float,
) -> int:
    """Rows of this batch left ``sending`` by an execution that stopped renewing its claim
    (it died): their outcome is unknown. A live claim is left to its owner."""
    now = utcnow()
    result = session.connection().execute(
        _orphan_statement(),
        {
            "b_campaign": campaign_id,
            "b_first": first_id,
            "b_last": last_id,
            "b_token": claim_token,
            "b_stale": now - timedelta(seconds=lease_seconds),
            "b_now": now,
        },
    )
    orphaned = int(result.rowcount or 0)
    if orphaned:
        changes = counts.Changes()
        changes.move(
            campaign_id,
            DeliveryStatus.SENDING.value,
            DeliveryStatus.UNKNOWN.value,
            orphaned,
            reason_after="outcome_hidden_by_crash",
        )
        counts.record(session, changes)
    return orphaned


# The statements every batch runs are built once per process, their values bound at each
# execution: building one (and its cache key) cost more CPU than running it (about 2 ms
# for the claim on a slow machine, 0.3 once built). They are run on the session's
# connection, in its transaction: no ORM object is loaded or synchronised by them.
def _param(name: str, column: str) -> Any:
    return bindparam(name, type_=Delivery.__table__.c[column].type)


def _in_batch() -> ColumnElement[bool]:
    """The batch's rows (the range first: an index range scan, not a search of the table)."""
    return and_(
        Delivery.campaign_id == _param("b_campaign", "campaign_id"),
        Delivery.id.between(_param("b_first", "id"), _param("b_last", "id")),
    )


def _orphan_statement() -> Update:
    return (
        update(Delivery)
        .where(
            _in_batch(),
            Delivery.status == DeliveryStatus.SENDING,
            Delivery.claim_token != _param("b_token", "claim_token"),
            Delivery.lease_seen_at() < _param("b_stale", "claimed_at"),
        )
        .values(
            status=DeliveryStatus.UNKNOWN.value,
            skip_reason="outcome_hidden_by_crash",
            finished_at=_param("b_now", "finished_at"),
        )
    )


_orphan_statement = built_once(_orphan_statement)


def _claim_statement(purpose: Purpose) -> Update:
    """The claim: the batch's queued rows move to ``sending``, or to ``suppressed`` with the
    gate's reason, in this one statement; nothing moves unless the campaign is sending."""
    reason = blocking_reason(Delivery.address_id, purpose)
    campaign_sending = (
        select(Campaign.id)
        .where(
            Campaign.id == _param("b_campaign", "campaign_id"),
            Campaign.status == CampaignStatus.SENDING,
        )
        .exists()
    )
    now = _param("b_now", "claimed_at")
    return (
        update(Delivery)
        .where(_in_batch(), Delivery.status == DeliveryStatus.QUEUED, campaign_sending)
        .values(
            status=case(
                (reason.is_(None), DeliveryStatus.SENDING.value),
                else_=DeliveryStatus.SUPPRESSED.value,
            ),
            skip_reason=reason,
            finished_at=case((reason.is_(None), None), else_=now),
            claim_token=_param("b_token", "claim_token"),
            claimed_at=now,
            renewed_at=None,
            attempts=Delivery.attempts + 1,
        )
        .returning(Delivery.id, Delivery.status, Delivery.skip_reason)
    )


_claim_statement = built_once(_claim_statement)


def _claimed_rows_statement() -> Select[int, int, int, str, str, str | None, str | None]:
    """What sending needs of the rows this execution claimed."""
    return (
        select(
            Delivery.id,
            Delivery.contact_id,
            Delivery.address_id,
            Address.address,
            Contact.submitted_address,
            Contact.first_name,
            Contact.last_name,
        )
        .join(Contact, Contact.id == Delivery.contact_id)
        .join(Address, Address.id == Delivery.address_id)
        .where(
            _in_batch(),
            Delivery.claim_token == _param("b_token", "claim_token"),
            Delivery.status == DeliveryStatus.SENDING,
        )
        .order_by(Delivery.id)
    )


_claimed_rows_statement = built_once(_claimed_rows_statement)


def claim_batch(
    session: Session,
    campaign: Campaign,
    first_id: int,
    last_id: int,
    claim_token: str,
    reasons: CountOf[str] | None = None,
) -> tuple[list[ClaimedRow], int]:
    """Claim the batch's queued rows through the gate, in ONE statement.

    Returns the rows to send and how many were skipped by the gate (counted by reason into
    ``reasons`` when given). Nothing is claimed unless the campaign is still ``sending``
    (pause and cancel take effect here).
    """
    batch = {
        "b_campaign": campaign.id,
        "b_first": first_id,
        "b_last": last_id,
        "b_token": claim_token,
    }
    connection = session.connection()
    outcome = connection.execute(
        _claim_statement(Purpose(campaign.purpose)),
        {**batch, "b_now": utcnow()},
    ).all()
    skipped = 0
    moved: CountOf[tuple[str, str | None]] = CountOf(
        (status, skip_reason) for _, status, skip_reason in outcome
    )
    changes = counts.Changes()
    for (status, skip_reason), number in moved.items():
        changes.move(
            campaign.id, DeliveryStatus.QUEUED.value, status, number, reason_after=skip_reason
        )
        if status == DeliveryStatus.SUPPRESSED:
            skipped += number
            if reasons is not None:
                reasons[skip_reason or "unknown"] += number
    counts.record(session, changes)  # the same transaction as the claim
    if len(outcome) == skipped:
        return [], skipped
    rows = connection.execute(_claimed_rows_statement(), batch)
    return [_claimed(*row) for row in rows], skipped


def _claimed(
    delivery_id: int,
    contact_id: int,
    address_id: int,
    canonical: str,
    submitted: str,
    first_name: str | None,
    last_name: str | None,
) -> ClaimedRow:
    """The row to send, addressed as the person gave the address (never the matching key).

    When the submitted address does not belong to the key the gate checked, the row carries
    no address and fails unsent: mail goes only where the gate looked.
    """
    try:
        address: str | None = delivery_address(submitted)
    except InvalidAddress:
        address = None
    if address is None or not is_delivery_form_of(address, canonical):
        address = None
    return ClaimedRow(delivery_id, contact_id, address_id, address, first_name, last_name)


def _deliver(
    rows: list[ClaimedRow],
    factory: MessageFactory,
    transport: Transport,
    result: BatchResult,
    before_send: Callable[[ClaimedRow], None] | None,
    renew: Callable[[], None],
    pacer: throttle.Pacer,
) -> None:
    # The next message is built while this one waits for the relay's replies; every
    # decision below stays here, in row order (dispatcher/sending/prebuild.py).
    with BUILDER(rows, factory) as built:
        _send_each(rows, built, factory, transport, result, before_send, renew, pacer)


def _send_each(
    rows: list[ClaimedRow],
    built: BuiltWhileWaiting,
    factory: MessageFactory,
    transport: Transport,
    result: BatchResult,
    before_send: Callable[[ClaimedRow], None] | None,
    renew: Callable[[], None],
    pacer: throttle.Pacer,
) -> None:
    # The next row's message, taken before this one goes so that its envelope can travel
    # with this one's end (one round trip a message); or what building it raised.
    ahead: tuple[ClaimedRow, tuple[str, bytes] | Exception] | None = None
    for index, row in enumerate(rows):
        try:
            if row.address is not None:
                # A sender behind its slots reserves new ones: in the database too. It may
                # wait long for a slot; the pacer's sleep renews the claim meanwhile.
                pacer.wait(index)
            # After any wait, before the message: the rows are still this execution's.
            renew()
        except (OperationalError, LeaseLost) as exc:
            # The database is away, or the claim ran out: send nothing more (fail closed);
            # what has left is recorded (``_record_durably``), the rest goes back to the
            # queue (rows another execution marked are not ours to move).
            result.problem = exc
            result.released.extend(r.delivery_id for r in rows[index:])
            return
        if row.address is None:
            result.failed[row.delivery_id] = (
                "not sent: the contact's submitted address does not match the address checked"
            )
            result.reasons[row.delivery_id] = "address_mismatch"
            continue
        try:
            if ahead is not None and ahead[0] is row:
                taken, ahead = ahead[1], None
                if isinstance(taken, Exception):
                    raise taken
                envelope_from, message = taken
            else:
                envelope_from, message = built.take(row)
        except (HeaderInjection, TemplateProblem) as exc:
            # Bad data for this one recipient: nothing is sent to them; the rest go on.
            result.failed[row.delivery_id] = f"not sent: {exc}"
            continue
        then: tuple[str, str, bytes] | None = None
        following = rows[index + 1] if index + 1 < len(rows) else None
        if following is not None and following.address is not None and not pacer.limits.active:
            # Announced only when nothing can come between: no pacing to wait for.
            try:
                sender, next_message = built.take(following)
            except (HeaderInjection, TemplateProblem) as exc:
                ahead = (following, exc)
            else:
                ahead = (following, (sender, next_message))
                then = (sender, following.address, next_message)
        if before_send is not None:
            before_send(row)
        result.in_flight = row.delivery_id
        handed = time.perf_counter()
        try:
            with factory.clock.stage("send"):
                try:
                    transport.send(
                        envelope_from, row.address, message, then=then, while_waiting=built.ahead
                    )
                finally:
                    metrics.SEND_SECONDS.observe(time.perf_counter() - handed)
        except NeedsSmtpUtf8 as exc:
            # The relay cannot carry this address; folding it into ASCII would reach
            # another mailbox. Not sent, not retried, not a bounce.
            result.failed[row.delivery_id] = str(exc)
            result.reasons[row.delivery_id] = "needs_smtputf8"
        except PermanentSendError as exc:
            if exc.sender_refused:
                # The relay refuses our own address: a configuration fault every message
                # would meet. Nothing is failed; the batch waits in the queue (and retries)
                # until the relay takes our MAIL FROM again.
                log.error("the mail relay refused the sender address: %s", exc)
                result.problem = exc
                result.released.extend(r.delivery_id for r in rows[index:])
                return
            result.failed[row.delivery_id] = f"refused by the mail server: {exc}"
            if exc.recipient_refused:
                result.bounced[row.delivery_id] = row.address_id
                result.reasons[row.delivery_id] = Reason.HARD_BOUNCE.value
        except UncertainSendError:
            result.unknown.append(row.delivery_id)
        except TransientSendError as exc:
            result.problem = exc
            if getattr(exc, "connection_lost", True):
                result.released.extend(r.delivery_id for r in rows[index:])
                return
            result.released.append(row.delivery_id)
        else:
            result.sent.append(row.delivery_id)
        result.in_flight = None


class _Lease:
    """Renews this execution's claim while it sends, so nobody takes its rows for dead, and
    tells when somebody did: a batch whose claim ran out (a sender stalled for longer than
    the lease) must not send the rows another execution has marked ``unknown``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        claim_token: str,
        lease_seconds: float,
        batch: ColumnElement[bool],
        held: int,
        since: float,
    ) -> None:
        """``held``: how many rows the claim took (all stay ``sending`` under its token
        until the batch's outcomes are recorded); ``since``: ``time.monotonic()`` when the
        claim committed."""
        self.sessions = sessions
        self.claim_token = claim_token
        self.batch = batch  # the batch's rows, so the renewal is an index range scan
        self.held = held
        # Often enough that losing the database stops sending within seconds. A row is
        # taken for dead only after ``lease_seconds`` without a renewal, four times this.
        self.every = min(lease_seconds / 4, 2.0)
        self.last = since

    def renew(self) -> None:
        """Renew the claim when it is due; :class:`LeaseLost` when some row is no longer
        this execution's."""
        if time.monotonic() - self.last < self.every:
            return
        with session_scope(self.sessions) as session:
            renewed = (
                session.connection()
                .execute(
                    update(Delivery)
                    .where(
                        self.batch,
                        Delivery.claim_token == self.claim_token,
                        Delivery.status == DeliveryStatus.SENDING,
                    )
                    .values(renewed_at=utcnow())
                )
                .rowcount
            )
        if renewed < self.held:
            raise LeaseLost(
                f"only {renewed} of the batch's {self.held} rows are still this execution's: "
                "its claim ran out"
            )
        self.last = time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (waiting for a rate limit's slot), renewing the claim on the
        way: a slot can be minutes away, behind other workers' reservations."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, self.every))
            self.renew()


def _ids_among(dialect: str) -> ColumnElement[bool]:
    """The row is one of the ``ids`` parameter's: one array parameter on PostgreSQL, where
    an IN list of a batch's ids cost ~0.8 ms of CPU a statement to write out and parse."""
    if dialect == "postgresql":
        return Delivery.id == any_(bindparam("ids", type_=ARRAY(BigInteger)))
    return Delivery.id.in_(bindparam("ids", expanding=True))


def _outcome_statement(dialect: str, status: DeliveryStatus) -> Update:
    """Rows of ``ids`` still this execution's (another may have found its claim dead) move
    to ``status``: sent, unknown (connection lost) or back to the queue."""
    values: dict[str, Any] = {"status": status.value}
    if status is DeliveryStatus.QUEUED:
        values["claim_token"] = None
    else:
        values["finished_at"] = _param("b_now", "finished_at")
    if status is DeliveryStatus.UNKNOWN:
        values["skip_reason"] = "connection_lost"
    return (
        update(Delivery)
        .where(
            Delivery.claim_token == _param("b_token", "claim_token"),
            Delivery.status == DeliveryStatus.SENDING,
            _ids_among(dialect),
        )
        .values(**values)
    )


_outcome_statement = built_once(_outcome_statement)


def _record(session: Session, campaign_id: int, claim_token: str, result: BatchResult) -> None:
    now = utcnow()
    mine = and_(Delivery.claim_token == claim_token, Delivery.status == DeliveryStatus.SENDING)
    # Only rows still this execution's move (another may have found the claim dead), so the
    # counters move by what each UPDATE changed, and by one INSERT for the whole batch.
    changes = counts.Changes()
    sending = DeliveryStatus.SENDING.value
    connection = session.connection()
    dialect = connection.dialect.name
    for ids, status, reason in (
        (result.sent, DeliveryStatus.SENT, None),
        (result.unknown, DeliveryStatus.UNKNOWN, "connection_lost"),
        (result.released, DeliveryStatus.QUEUED, None),
    ):
        if ids:
            moved = connection.execute(
                _outcome_statement(dialect, status),
                {"b_token": claim_token, "ids": list(ids), "b_now": now},
            ).rowcount
            changes.move(campaign_id, sending, status.value, int(moved or 0), reason_after=reason)
    if result.failed:
        failed = session.execute(
            update(Delivery)
            .where(mine, Delivery.id.in_(list(result.failed)))
            .values(
                status=DeliveryStatus.FAILED.value,
                finished_at=now,
                skip_reason=case(
                    *((Delivery.id == i, r) for i, r in result.reasons.items()),
                    else_="render_error",
                )
                if result.reasons
                else "render_error",
                error=case(
                    *((Delivery.id == i, e[:500]) for i, e in result.failed.items()),
                    else_=None,
                ),
            )
            .returning(Delivery.skip_reason)
        )
        for (why,) in failed:
            changes.move(campaign_id, sending, DeliveryStatus.FAILED.value, reason_after=why)
    counts.record(session, changes)
    for address_id in set(result.bounced.values()):
        add_suppression(
            session,
            address_id,
            scope="global",
            reason=Reason.HARD_BOUNCE,
            source=f"smtp:campaign:{campaign_id}",
        )
    finish_if_done(session, campaign_id)


def _record_durably(
    sessions: sessionmaker[Session], campaign_id: int, claim_token: str, result: BatchResult
) -> None:
    """Write the outcomes, trying for a while if the database is away: once messages have
    left, only this process knows it. If it still fails, the rows stay ``sending`` and the
    next execution marks them ``unknown`` (never resent)."""
    delay = 0.5
    for attempt in range(_RECORD_ATTEMPTS):
        try:
            with session_scope(sessions) as session:
                _record(session, campaign_id, claim_token, result)
            return
        except OperationalError:
            if attempt == _RECORD_ATTEMPTS - 1:
                raise
            log.warning("recording batch outcomes failed; retrying in %.1fs", delay)
            time.sleep(delay + random.uniform(0, delay / 2))
            delay = min(delay * 2, 10.0)


def _settle(rows: list[ClaimedRow], result: BatchResult) -> None:
    """After sending stopped early: the message the transport had (if nothing said what
    became of it) is ``unknown``, and every row not yet decided goes back to the queue.
    Only a claimed row not yet decided can be the one in flight."""
    done = set(result.sent) | set(result.failed) | set(result.unknown) | set(result.released)
    undecided = [r.delivery_id for r in rows if r.delivery_id not in done]
    if result.in_flight in undecided:
        undecided.remove(result.in_flight)
        result.unknown.append(result.in_flight)
    result.released.extend(undecided)


def _send_claimed(
    settings: Settings,
    sessions: sessionmaker[Session],
    rows: list[ClaimedRow],
    factory: MessageFactory,
    transport: Transport,
    result: BatchResult,
    before_send: Callable[[ClaimedRow], None] | None,
    lease: _Lease,
) -> None:
    """Send the claimed ``rows``, paced by the rate limits, under ``lease``."""
    limits = throttle.Limits(settings.rate_per_second, settings.domain_rate_per_second)

    def reserve(addresses: Sequence[str]) -> list[float]:
        with session_scope(sessions) as session:
            return throttle.schedule(session, addresses, limits)

    addresses = [r.address or "" for r in rows]
    pacer = throttle.Pacer(limits, reserve, addresses, sleep=lease.sleep)
    _deliver(rows, factory, transport, result, before_send, lease.renew, pacer)


def send_batch(
    settings: Settings,
    sessions: sessionmaker[Session],
    signer: TokenSigner,
    campaign_id: int,
    first_id: int,
    last_id: int,
    *,
    before_send: Callable[[ClaimedRow], None] | None = None,
) -> BatchResult:
    """Send the queued rows of one batch. Raises :class:`RetryLater` when rows went back to
    the queue, so the task retries later with backoff. ``before_send`` is a test seam."""
    claim_token = uuid.uuid4().hex
    result = BatchResult()
    started = time.perf_counter()
    clock = Stopwatch(settings.stage_timings)
    with session_scope(sessions) as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            log.warning("batch for unknown campaign %s dropped", campaign_id)
            return result
        session.expunge(campaign)
    purpose = campaign.purpose
    # What the messages need is made before the claim: the campaign's render (read from the
    # database, or prepared here when this process's templates differ) and the relay's
    # connection. The claim's lease runs from its commit, so none of it can outlast the
    # lease; and a campaign that cannot be rendered, or a relay that cannot be reached,
    # claims nothing (the error goes to the task, which records it and retries).
    factory = MessageFactory(settings, campaign, signer, clock, sessions)
    rows: list[ClaimedRow] = []
    try:
        with reused_transport(settings.mail_url, timeout=settings.smtp_timeout_seconds) as tr:
            claiming = time.monotonic()  # the lease runs from no later than the claim
            with session_scope(sessions) as session:
                result.orphaned = orphan_stale_claims(
                    session,
                    campaign_id,
                    first_id,
                    last_id,
                    claim_token,
                    settings.claim_lease_seconds,
                )
                with clock.stage("claim"):
                    claimed, result.skipped = claim_batch(
                        session, campaign, first_id, last_id, claim_token, result.skip_reasons
                    )
            rows = claimed  # committed
            result.claimed = len(rows)
            if rows:
                batch = Delivery.campaign_id == campaign_id, Delivery.id.between(first_id, last_id)
                lease = _Lease(
                    sessions,
                    claim_token,
                    settings.claim_lease_seconds,
                    and_(*batch),
                    held=len(rows),
                    since=claiming,
                )
                _send_claimed(settings, sessions, rows, factory, tr, result, before_send, lease)
    except (TransientSendError, OperationalError, LeaseLost) as exc:
        if not rows:
            raise  # nothing claimed (the claim or the connection failed): the task retries
        # Closing the connection failed, or the database went away or the claim ran out
        # before the first message (reserving the first slots; once sending,
        # ``_send_each`` stops at its next look at the database): what was not sent goes
        # back. Rows left ``sending`` would be marked ``unknown``, never resent.
        result.problem = exc
        _settle(rows, result)
    except BaseException as exc:
        # Anything else (a signing key that is no key, Celery's soft time limit, a defect):
        # what left is recorded as it is for the errors above, the message in the
        # transport's hands is ``unknown``, the rest goes back to the queue; then the error
        # goes on to the task, which records it.
        if rows:
            result.problem = exc
            _settle(rows, result)
            with clock.stage("record"):
                _record_durably(sessions, campaign_id, claim_token, result)
        raise
    with clock.stage("record"):
        _record_durably(sessions, campaign_id, claim_token, result)
    clock.write(len(rows))
    metrics.observe_batch(
        purpose,
        sent=len(result.sent),
        failed=len(result.failed),
        unknown=len(result.unknown) + result.orphaned,
        retried=len(result.released),
        suppressed=result.skip_reasons,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "campaign %s batch %s-%s: claimed %s, skipped %s, sent %s, failed %s, released %s, "
        "unknown %s, orphaned %s",
        campaign_id,
        first_id,
        last_id,
        result.claimed,
        result.skipped,
        len(result.sent),
        len(result.failed),
        len(result.released),
        len(result.unknown),
        result.orphaned,
    )
    if result.released:
        raise RetryLater(f"{len(result.released)} messages put back in the queue") from (
            result.problem
        )
    return result


def describe(result: BatchResult) -> dict[str, Any]:
    return {
        "claimed": result.claimed,
        "skipped": result.skipped,
        "sent": len(result.sent),
        "failed": len(result.failed),
        "released": len(result.released),
        "unknown": len(result.unknown),
        "orphaned": result.orphaned,
    }
