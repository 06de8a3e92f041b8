"""Beat reads the configured inbound maildir: the schedule entry exists only when a mailbox
is configured, and the task applies what arrived, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.settings import Settings
from tests.unit.dispatcher.inbound.test_sources import bounce_for
from workers import runtime as runtime_module
from workers.app import celery_config
from workers.tasks import read_inbound_mailboxes


def test_the_schedule_reads_mailboxes_only_when_one_is_configured(settings: Settings) -> None:
    assert "read-inbound-mailboxes" not in celery_config(settings)["beat_schedule"]
    configured = celery_config(settings.replace(inbound_maildir="/var/mail/bounces"))
    assert configured["beat_schedule"]["read-inbound-mailboxes"]["task"] == (
        "workers.tasks.read_inbound_mailboxes"
    )


def test_the_task_applies_new_mail_once(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box = tmp_path / "bounces"
    (box / "new").mkdir(parents=True)
    (box / "new" / "1").write_bytes(bounce_for(settings, session_factory, "g@example.org"))
    monkeypatch.setenv("DISPATCHER_HOME", str(settings.home))
    monkeypatch.setenv("DISPATCHER_SECRET_KEYS", ",".join(settings.secret_keys))
    monkeypatch.setenv("DISPATCHER_INBOUND_MAILDIR", str(box))
    monkeypatch.setattr(runtime_module, "_runtime", None)

    assert read_inbound_mailboxes() == {"applied": 1}
    assert read_inbound_mailboxes() == {}
    runtime_module.runtime().engine.dispose()


def test_raw_messages_past_retention_are_dropped_and_the_rows_kept(
    settings: Settings, session: Session
) -> None:
    from datetime import timedelta

    from sqlalchemy import select

    from dispatcher.inbound.apply import process_message
    from dispatcher.inbound.retention import prune_raw
    from dispatcher.models import InboundMessage
    from suppression.models import utcnow
    from suppression.tokens import TokenSigner

    signer = TokenSigner(settings.secret_keys)
    for n in range(2):
        raw = f"From: a@b.example\r\nMessage-ID: <m{n}@x>\r\n\r\nhi\r\n".encode()
        process_message(session, settings, signer, raw, source="test")
    old, new = session.scalars(select(InboundMessage).order_by(InboundMessage.id)).all()
    old.received_at = utcnow() - timedelta(days=settings.inbound_keep_days + 1)
    session.flush()

    assert prune_raw(session, settings) == 1
    session.refresh(old)
    session.refresh(new)
    assert old.raw is None and old.kind == "not_feedback" and new.raw is not None
