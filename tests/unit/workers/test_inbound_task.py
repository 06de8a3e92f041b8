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
