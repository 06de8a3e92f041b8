"""``dispatcher inbound classify/process`` and the maildir reader: files and maildirs in,
each message recorded once, nothing changed by ``classify``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.inbound import returnpath
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
