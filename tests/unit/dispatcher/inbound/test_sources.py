"""``dispatcher inbound classify/process`` and the maildir reader: files and maildirs in,
each message recorded once, nothing changed by ``classify``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.inbound import returnpath, sources
from dispatcher.inbound.apply import Processed
from dispatcher.inbound.sources import poll_maildir
from dispatcher.models import InboundMessage
from dispatcher.settings import Settings
from suppression.models import Suppression
from suppression.tokens import TokenSigner
from tests.unit.dispatcher.inbound.test_apply import delivery_of, dsn, sent_campaign
from workers.cli import main

CORPUS = Path(__file__).resolve().parents[3] / "data" / "inbound"


def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": ",".join(settings.secret_keys),
        "DISPATCHER_BASE_URL": settings.base_url,
    }
    result = CliRunner().invoke(main, ["inbound", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with session_scope(sessions) as session:
        return (
            int(session.scalar(select(func.count()).select_from(InboundMessage)) or 0),
            int(session.scalar(select(func.count()).select_from(Suppression)) or 0),
        )


def bounce_for(settings: Settings, sessions: sessionmaker[Session], address: str) -> bytes:
    signer = TokenSigner(settings.secret_keys)
    with session_scope(sessions) as session:
        campaign = sent_campaign(session, address)
        delivery = delivery_of(session, campaign, address)
        return dsn(returnpath.verp_address(signer, settings.return_path, delivery.id), address)


def test_classify_prints_one_json_object_per_message_and_changes_nothing(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    raw = bounce_for(settings, session_factory, "gone@example.org")
    (tmp_path / "b.eml").write_bytes(raw)
    code, out, _ = cli(
        settings,
        "classify",
        "--json",
        str(tmp_path / "b.eml"),
        str(CORPUS / "local" / "arf_yahoo.eml"),
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [(r["kind"], r["recipients"]) for r in rows] == [
        ("hard_bounce", ["gone@example.org"]),
        ("complaint", ["kim@yahoo.example"]),
    ]
    assert rows[0]["matched"]["via"] == "verp" and rows[1]["matched"] is None
    assert rows[0]["file"].endswith("b.eml")
    assert counts(session_factory) == (0, 0)


def test_process_applies_a_maildir_once_however_often_it_is_run(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    box = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    (box / "new" / "1.bounce").write_bytes(bounce_for(settings, session_factory, "g@example.org"))
    shutil.copy(CORPUS / "flufl" / "postfix_01.txt", box / "cur" / "2.foreign:2,S")
    code, out, _ = cli(settings, "process", str(box))
    assert code == 0 and "1 applied" in out and "1 unmatched" in out
    assert counts(session_factory) == (2, 1)

    code, out, _ = cli(settings, "process", str(box))
    assert "2 duplicate" in out
    assert counts(session_factory) == (2, 1)


def test_process_names_a_path_it_cannot_read(settings: Settings, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["inbound", "process", "/dev/null"],
        env={"DISPATCHER_HOME": str(settings.home), "DISPATCHER_SECRET_KEYS": "x" * 20},
    )
    assert result.exit_code != 0 and "not a file, a folder or a maildir" in result.stderr


def test_a_plain_folder_is_read_file_by_file(settings: Settings) -> None:
    code, out, _ = cli(settings, "classify", str(CORPUS / "local"))
    assert code == 0 and len(out.splitlines()) == len(list((CORPUS / "local").iterdir()))


def test_the_maildir_poll_moves_each_applied_message_to_cur(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    box = tmp_path / "inbox"
    (box / "new").mkdir(parents=True)
    (box / "new" / "a").write_bytes(bounce_for(settings, session_factory, "a@example.org"))
    signer = TokenSigner(settings.secret_keys)

    tally = poll_maildir(session_factory, settings, signer, box)

    assert tally.counts == {"applied": 1}
    assert [p.name for p in (box / "cur").iterdir()] == ["a:2,S"]
    assert poll_maildir(session_factory, settings, signer, box).counts == {}


BROKEN = (
    b"From: mallory@example.net\r\nTo: bounces@killertracks.com\r\nSubject: hi\r\n"
    b"Message-ID: <broken@example.net>\r\nX-Break: here\r\n\r\nhi\r\n"
)


def failing_on(monkeypatch: pytest.MonkeyPatch, marker: bytes, error: Exception) -> None:
    """Processing raises ``error`` for every message holding ``marker`` (a fault of that
    message's own, or the database going away while it is applied)."""
    real = sources.process_message

    def process(
        session: Session, settings: Settings, signer: TokenSigner, raw: bytes, **kw: Any
    ) -> Processed:
        if marker in raw:
            raise error
        return real(session, settings, signer, raw, **kw)

    monkeypatch.setattr(sources, "process_message", process)


def maildir(tmp_path: Path, **messages: bytes) -> Path:
    box = tmp_path / "inbox"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    for name, raw in messages.items():
        (box / "new" / name).write_bytes(raw)
    return box


def test_a_message_that_fails_is_recorded_flagged_and_does_not_stop_the_ones_after_it(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    box = maildir(tmp_path, m1=BROKEN, m2=bounce_for(settings, session_factory, "gone@example.org"))
    failing_on(monkeypatch, b"X-Break", ValueError("cannot store mallory@example.net"))
    signer = TokenSigner(settings.secret_keys)

    tally = poll_maildir(session_factory, settings, signer, box)

    assert tally.counts == {"failed": 1, "applied": 1}
    assert sorted(p.name for p in (box / "cur").iterdir()) == ["m1:2,F", "m2:2,S"]
    assert list((box / "new").iterdir()) == []
    with session_scope(session_factory) as session:
        failed = session.scalars(
            select(InboundMessage).where(InboundMessage.key.startswith("failed:"))
        ).one()
        assert (failed.kind, failed.outcome, failed.source) == ("unparsed", "unparsed", "maildir")
        assert failed.detail == {"why": "processing failed: ValueError"}
        assert failed.raw == BROKEN
    lines = [r.getMessage() for r in caplog.records if r.name == "dispatcher.inbound.sources"]
    assert lines == ["inbound maildir: message m1 set aside (processing failed: ValueError)"]
    # Nothing is left to do: the next run finds an empty new/.
    assert poll_maildir(session_factory, settings, signer, box).counts == {}


def test_a_failure_that_cannot_be_recorded_still_moves_the_message_on(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    box = maildir(tmp_path, m1=BROKEN)
    failing_on(monkeypatch, b"X-Break", ValueError("one"))
    monkeypatch.setattr(sources, "record_failed", Mock(side_effect=ValueError("two")))

    tally = poll_maildir(session_factory, settings, TokenSigner(settings.secret_keys), box)

    assert tally.counts == {"failed": 1}
    assert [p.name for p in (box / "cur").iterdir()] == ["m1:2,F"]
    assert "message m1 could not be recorded either (ValueError)" in caplog.text


def test_with_the_database_away_a_message_waits_in_new_for_the_next_run(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = bounce_for(settings, session_factory, "gone@example.org")
    box = maildir(tmp_path, m1=raw)
    signer = TokenSigner(settings.secret_keys)
    away = OperationalError("SELECT 1", {}, Exception("connection refused"))
    real = sources.process_message
    failing_on(monkeypatch, b"", away)

    with pytest.raises(OperationalError):
        poll_maildir(session_factory, settings, signer, box)

    assert [p.name for p in (box / "new").iterdir()] == ["m1"]
    assert counts(session_factory) == (0, 0)  # nothing recorded as failed
    monkeypatch.setattr(sources, "process_message", real)  # the database is back
    assert poll_maildir(session_factory, settings, signer, box).counts == {"applied": 1}
