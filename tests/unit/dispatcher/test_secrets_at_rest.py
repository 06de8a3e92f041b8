"""Files that hold addresses, names, signed links or keys are their owner's alone: the SQLite
database (and its WAL files), the broker's SQLite file, the maildir outbox, the home folder."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.campaigns.fleet import start_due_now
from dispatcher.db import make_engine, upgrade
from dispatcher.sending.transports import MaildirTransport
from tests.conftest import settings_for
from workers.app import celery_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    """The umask most machines have, under which files come out 0644 unless we say so."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_database_its_wal_files_and_home_are_private(tmp_path: Path) -> None:
    home = tmp_path / "var"
    settings = settings_for(home)
    upgrade(settings)
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM campaigns")
        db = Path(settings.database_url.removeprefix("sqlite:///"))
        files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
        assert {f.name: mode(f) for f in files if f.exists()} == {f.name: 0o600 for f in files}
    engine.dispose()
    assert mode(home) == 0o700


def test_the_brokers_sqlite_file_is_private(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "var")
    celery_config(settings)
    broker = Path(settings.broker_url.removeprefix("sqla+sqlite:///"))
    assert mode(broker) == 0o600


def test_the_brokers_sqlite_file_made_by_a_send_now_is_private(tmp_path: Path) -> None:
    """`campaign schedule` may publish before any worker has made the broker's file."""
    settings = settings_for(tmp_path / "var")
    assert start_due_now(settings)
    broker = Path(settings.broker_url.removeprefix("sqla+sqlite:///"))
    assert mode(broker) == 0o600


def test_outbox_folders_and_messages_are_private(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    message = b"Message-ID: <1@kt>\r\nSubject: hi\r\n\r\nbody\r\n"
    MaildirTransport(outbox).send("info@killertracks.com", "ann@example.com", message)
    assert {p.name: mode(p) for p in [outbox, *outbox.iterdir()]} == {
        "outbox": 0o700,
        "tmp": 0o700,
        "new": 0o700,
        "cur": 0o700,
    }
    [written] = (outbox / "new").iterdir()
    assert mode(written) == 0o600
    assert written.read_bytes().endswith(message)
