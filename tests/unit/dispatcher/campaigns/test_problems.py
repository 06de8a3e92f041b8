"""Task errors become staff messages in one place, kept per task, resolved on success."""

from __future__ import annotations

import smtplib

import kombu.exceptions
import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from dispatcher.campaigns.problems import (
    FAN_OUT,
    SEND_BATCH,
    START,
    campaigns_with_open_problems,
    explain,
    open_task_problems,
    record_task_error,
    resolve_task_errors,
)
from dispatcher.campaigns.services import create_campaign
from dispatcher.sending.batch import RetryLater
from dispatcher.sending.transports import (
    OutboxUnwritable,
    PermanentSendError,
    RelayLoginRefused,
    RelayUnreachable,
    TransientSendError,
)
from dispatcher.settings import Settings


def _retry_later_from(cause: Exception) -> RetryLater:
    try:
        raise RetryLater("3 messages put back in the queue") from cause
    except RetryLater as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "code", "says"),
    [
        (RelayLoginRefused("SMTP h:587 refused"), "smtp_login_refused", "DISPATCHER_MAIL_URL"),
        (_retry_later_from(RelayLoginRefused("x")), "smtp_login_refused", "refused our login"),
        (_retry_later_from(RelayUnreachable("x")), "smtp_unreachable", "host and port"),
        (
            PermanentSendError(
                "553 <info@x.com> no", code=553, recipient="a@b.c", sender_refused=True
            ),
            "smtp_sender_refused",
            "DISPATCHER_SENDER",
        ),
        (OutboxUnwritable("maildir /x"), "outbox_unwritable", "free disk space"),
        (OperationalError("SELECT", {}, Exception("gone")), "database_unavailable", "DATABASE_URL"),
        (kombu.exceptions.OperationalError("refused"), "broker_unreachable", "BROKER_URL"),
        (ConnectionRefusedError(111, "refused"), "broker_unreachable", "BROKER_URL"),
        (_retry_later_from(TransientSendError("451 <a@b.c>")), "smtp_try_later", "retries by"),
        (KeyError("bob@example.com"), "unexpected", "failed unexpectedly (KeyError)"),
    ],
)
def test_explain_names_what_to_check_and_never_quotes_the_error(
    exc: BaseException, code: str, says: str
) -> None:
    said = explain(exc, SEND_BATCH)
    assert said.code == code
    assert says in said.message
    assert "@" not in said.message  # no address, whatever the exception carried


def test_the_auth_error_of_smtplib_is_not_what_staff_read() -> None:
    raw = smtplib.SMTPAuthenticationError(535, b"5.7.8 bad password for user@example.com")
    assert explain(raw).code == "unexpected"  # transports turn it into RelayLoginRefused


def test_one_row_per_task_reopened_after_success(session: Session, settings: Settings) -> None:
    campaign = create_campaign(session, settings, name="c", subject="s", template="new-releases")
    other = create_campaign(session, settings, name="d", subject="s", template="new-releases")
    login = _retry_later_from(RelayLoginRefused("x"))
    record_task_error(session, campaign.id, SEND_BATCH, login, 1, 200)
    record_task_error(session, campaign.id, SEND_BATCH, login, 1, 200)
    record_task_error(session, campaign.id, SEND_BATCH, login, 201, 400)
    record_task_error(session, campaign.id, START, kombu.exceptions.OperationalError("x"))
    (broker, smtp) = sorted(open_task_problems(session, campaign.id), key=lambda p: p.code)
    assert (smtp.code, smtp.tasks, smtp.occurrences) == ("smtp_login_refused", 2, 3)
    assert (broker.code, broker.tasks) == ("broker_unreachable", 1)
    assert campaigns_with_open_problems(session) == {campaign.id}

    resolve_task_errors(session, campaign.id, (FAN_OUT, START))
    resolve_task_errors(session, campaign.id, (SEND_BATCH,), first_id=1)
    (smtp,) = open_task_problems(session, campaign.id)
    assert (smtp.tasks, smtp.occurrences) == (1, 1)

    resolve_task_errors(session, campaign.id, (SEND_BATCH,), first_id=201)
    assert open_task_problems(session, campaign.id) == []
    assert campaigns_with_open_problems(session) == set()

    record_task_error(session, campaign.id, SEND_BATCH, login, 1, 200)
    (again,) = open_task_problems(session, campaign.id)
    assert again.occurrences == 1  # counted afresh after it was resolved
    assert open_task_problems(session, other.id) == []
