"""What went wrong in a campaign's tasks, in words a staff member can act on.

:func:`explain` is the one place an exception becomes a staff message. Messages are fixed
sentences (plus at most an SMTP reply code): never an address, a password or a server's own
text, which may quote an address. The worker's log keeps the details.

Each task of a campaign (its start, its fan-out, each batch) keeps its last error in
``campaign_task_errors``; the row is marked resolved when the same task later succeeds, so
the open rows are the campaign's current trouble.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import kombu.exceptions
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import case, func, select, update
from sqlalchemy.exc import OperationalError as DatabaseUnavailable
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.models import CampaignTaskError
from dispatcher.sending.rendering import TemplateProblem
from dispatcher.sending.transports import (
    OutboxUnwritable,
    PermanentSendError,
    RelayLoginRefused,
    RelayUnreachable,
    RelayUnsupported,
    TransientSendError,
)
from suppression.models import utcnow
from suppression.sql import insert_for

log = logging.getLogger(__name__)

# The tasks of a campaign whose errors are kept (``first_id`` 0 for all but a batch).
START, FAN_OUT, SEND_BATCH = "start", "fan_out", "send_batch"


@dataclass(frozen=True)
class Explanation:
    code: str
    message: str


def _sender_refused(exc: BaseException) -> bool:
    return isinstance(exc, PermanentSendError) and exc.sender_refused


# First match wins, searched through the whole chain of causes: a RetryLater carries the
# relay's refusal as its cause, and the cause is what staff need to read.
_RULES: list[tuple[Callable[[BaseException], bool], str, str]] = [
    (
        lambda e: isinstance(e, RelayLoginRefused),
        "smtp_login_refused",
        "the SMTP relay refused our login: check the user and password in DISPATCHER_MAIL_URL",
    ),
    (
        lambda e: isinstance(e, RelayUnsupported),
        "smtp_unsupported",
        "the SMTP relay does not offer what DISPATCHER_MAIL_URL asks for (STARTTLS or login): "
        "check its scheme (smtp:// or smtps://) and options",
    ),
    (
        lambda e: isinstance(e, RelayUnreachable),
        "smtp_unreachable",
        "cannot connect to the SMTP relay: check the host and port in DISPATCHER_MAIL_URL and "
        "that the relay is running; the batch retries by itself",
    ),
    (
        _sender_refused,
        "smtp_sender_refused",
        "the SMTP relay refused our sender address: check DISPATCHER_SENDER and that the relay "
        "lets this account send as it",
    ),
    (
        lambda e: isinstance(e, OutboxUnwritable),
        "outbox_unwritable",
        "the outbox folder cannot be written: check DISPATCHER_MAIL_URL and the free disk space",
    ),
    (
        lambda e: isinstance(e, DatabaseUnavailable),
        "database_unavailable",
        "the database did not answer: check DISPATCHER_DATABASE_URL and that the database is "
        "running; the task retries by itself",
    ),
    (
        lambda e: isinstance(e, (kombu.exceptions.OperationalError, ConnectionError)),
        "broker_unreachable",
        "cannot reach the broker to queue the work: check DISPATCHER_BROKER_URL and that the "
        "broker is running",
    ),
    (
        lambda e: isinstance(e, TemplateProblem),
        "template_problem",
        "the campaign's template no longer renders: preview the campaign to see why",
    ),
    (
        lambda e: isinstance(e, SoftTimeLimitExceeded),
        "task_timeout",
        "a batch ran past its time limit: the SMTP relay may be very slow; see "
        "DISPATCHER_SMTP_TIMEOUT_SECONDS",
    ),
    (
        lambda e: isinstance(e, TransientSendError),
        "smtp_try_later",
        "the SMTP relay asked us to try some messages later; the batch retries by itself",
    ),
]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def explain(exc: BaseException, task: str = "task") -> Explanation:
    """The staff message for ``exc``: what happened and what to check."""
    chain = list(_chain(exc))
    for matches, code, message in _RULES:
        for found in chain:
            if matches(found):
                if _sender_refused(found):
                    assert isinstance(found, PermanentSendError)
                    message = f"{message} (SMTP {found.code})"
                return Explanation(code, message)
    return Explanation(
        "unexpected",
        f"the {task} task failed unexpectedly ({type(exc).__name__}): see the worker log",
    )


def record_task_error(
    session: Session,
    campaign_id: int,
    task: str,
    exc: BaseException,
    first_id: int = 0,
    last_id: int = 0,
) -> Explanation:
    """Keep ``exc`` as the last error of this task of the campaign (one row per task)."""
    said = explain(exc, task)
    now = utcnow()
    table = CampaignTaskError.__table__
    stmt = insert_for(session, CampaignTaskError).values(
        campaign_id=campaign_id,
        task=task,
        first_id=first_id,
        last_id=last_id,
        code=said.code,
        message=said.message,
        occurrences=1,
        first_at=now,
        last_at=now,
        resolved_at=None,
    )
    reopened = table.c.resolved_at.is_not(None)
    stmt = stmt.on_conflict_do_update(
        index_elements=["campaign_id", "task", "first_id"],
        set_={
            "last_id": stmt.excluded.last_id,
            "code": stmt.excluded.code,
            "message": stmt.excluded.message,
            "last_at": stmt.excluded.last_at,
            "occurrences": case((reopened, 1), else_=table.c.occurrences + 1),
            "first_at": case((reopened, stmt.excluded.first_at), else_=table.c.first_at),
            "resolved_at": None,
        },
    )
    session.execute(stmt)
    return said


def resolve_task_errors(
    session: Session, campaign_id: int, tasks: tuple[str, ...], first_id: int = 0
) -> None:
    """The task succeeded: its last error, if any, is history."""
    session.execute(
        update(CampaignTaskError)
        .where(
            CampaignTaskError.campaign_id == campaign_id,
            CampaignTaskError.task.in_(tasks),
            CampaignTaskError.first_id == first_id,
            CampaignTaskError.resolved_at.is_(None),
        )
        .values(resolved_at=utcnow())
    )


@contextmanager
def recording_errors(
    sessions: sessionmaker[Session],
    campaign_id: int,
    task: str,
    first_id: int = 0,
    last_id: int = 0,
    *,
    resolves: tuple[str, ...] = (),
) -> Iterator[None]:
    """Run a task's work; keep its error for staff (then re-raise, so Celery retries as
    declared), or mark its earlier errors (and those of ``resolves``) resolved."""
    try:
        yield
    except Exception as exc:
        try:
            with session_scope(sessions) as session:
                said = record_task_error(session, campaign_id, task, exc, first_id, last_id)
            log.warning("campaign %s %s: %s", campaign_id, task, said.message)
        except Exception as failed:  # noqa: BLE001 - the task's own error matters more
            log.warning(
                "campaign %s %s: could not record its error (%s)",
                campaign_id,
                task,
                type(failed).__name__,
            )
        raise
    try:
        with session_scope(sessions) as session:
            resolve_task_errors(session, campaign_id, (task, *resolves), first_id)
    except Exception as failed:  # noqa: BLE001 - the work itself is done
        log.warning(
            "campaign %s %s: could not clear its error (%s)",
            campaign_id,
            task,
            type(failed).__name__,
        )


@dataclass(frozen=True)
class TaskProblem:
    """One kind of error open on a campaign: how many of its tasks report it, since when."""

    code: str
    message: str
    tasks: int
    occurrences: int
    first_at: datetime
    last_at: datetime


def open_task_problems(session: Session, campaign_id: int) -> list[TaskProblem]:
    """The campaign's unresolved task errors, one entry per kind, most recent first."""
    rows = session.execute(
        select(
            CampaignTaskError.code,
            func.max(CampaignTaskError.message),
            func.count(),
            func.sum(CampaignTaskError.occurrences),
            func.min(CampaignTaskError.first_at),
            func.max(CampaignTaskError.last_at),
        )
        .where(
            CampaignTaskError.campaign_id == campaign_id,
            CampaignTaskError.resolved_at.is_(None),
        )
        .group_by(CampaignTaskError.code)
    ).all()
    problems = [
        TaskProblem(str(c), str(m), int(n), int(o), f, last) for c, m, n, o, f, last in rows
    ]
    return sorted(problems, key=lambda p: p.last_at, reverse=True)


def campaigns_with_open_problems(session: Session) -> set[int]:
    """Ids of campaigns with at least one unresolved task error (one query)."""
    return set(
        session.scalars(
            select(CampaignTaskError.campaign_id)
            .where(CampaignTaskError.resolved_at.is_(None))
            .distinct()
        )
    )
