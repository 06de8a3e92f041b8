"""Readiness, /healthz and /readyz, and each doctor check both passing and failing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fleet import BEAT, WORKER, write_heartbeat
from dispatcher.cli import main
from dispatcher.console import create_console_app
from dispatcher.db import make_engine, session_scope
from dispatcher.ops import health
from dispatcher.settings import Settings
from dispatcher.web import create_app
from tests.conftest import TEST_KEYS, settings_for
from tests.support.smtp_sink import SmtpSink, self_signed_certificate

CLOSED_PORT = 9  # discard: nothing listens on 127.0.0.1


def by_name(checks: list[health.Check]) -> dict[str, health.Check]:
    return {c.name: c for c in checks}


def test_ready_on_a_migrated_database_with_keys(settings: Settings, engine: Engine) -> None:
    checks = by_name(health.readiness(settings, engine))
    assert [c.ok for c in checks.values()] == [True, True, True]
    assert checks["migrations"].detail.startswith("at head")


def test_not_ready_when_the_schema_is_behind(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "fresh")
    engine = make_engine(settings.database_url)
    checks = by_name(health.readiness(settings, engine))
    assert checks["database"].ok
    assert not checks["migrations"].ok
    assert "dispatcher db upgrade" in checks["migrations"].fix


def test_not_ready_when_the_database_does_not_answer(settings: Settings) -> None:
    engine = make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{CLOSED_PORT}/none")
    checks = by_name(health.readiness(settings, engine))
    assert not checks["database"].ok and "migrations" not in checks
    assert "DISPATCHER_DATABASE_URL" in checks["database"].fix


def test_not_ready_without_a_usable_key(settings: Settings, engine: Engine) -> None:
    checks = by_name(health.readiness(settings.replace(secret_keys=("too-short",)), engine))
    assert not checks["keys"].ok and checks["database"].ok


def test_healthz_and_readyz_on_the_recipient_app(settings: Settings, tmp_path: Path) -> None:
    client = create_app(settings).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ok"

    behind = create_app(settings_for(tmp_path / "unmigrated")).test_client()
    assert behind.get("/healthz").status_code == 200
    answer = behind.get("/readyz")
    assert answer.status_code == 503
    failed = [c["name"] for c in answer.get_json()["checks"] if not c["ok"]]
    assert failed == ["migrations"]


def test_healthz_and_readyz_on_the_console_need_no_sign_in(
    settings: Settings, tmp_path: Path
) -> None:
    client = create_console_app(settings).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ok"
    assert "Set-Cookie" not in ready.headers

    behind = create_console_app(settings_for(tmp_path / "unmigrated")).test_client()
    assert behind.get("/healthz").status_code == 200
    assert behind.get("/readyz").status_code == 503


def test_broker_check(settings: Settings) -> None:
    assert health.check_broker(settings).ok
    down = settings.replace(broker_url=f"amqp://guest:guest@127.0.0.1:{CLOSED_PORT}//")
    check = health.check_broker(down, timeout=1)
    assert not check.ok and "DISPATCHER_BROKER_URL" in check.fix


def test_mail_check_plain_smtp_sends_nothing(settings: Settings, smtp_sink: SmtpSink) -> None:
    before = smtp_sink.connections
    check = health.check_mail(settings.replace(mail_url=smtp_sink.url))
    assert check.ok, check
    assert smtp_sink.connections == before + 1 and smtp_sink.received() == []


def test_mail_check_starttls_and_login(settings: Settings, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    sink = SmtpSink(tls=(cert, key), credentials={"us": "right-password"}).start()
    try:
        url = f"smtp://us:{{}}@127.0.0.1:{sink.port}?starttls=true&cafile={cert}"
        good = health.check_mail(settings.replace(mail_url=url.format("right-password")))
        assert good.ok and "STARTTLS" in good.detail and "AUTH" in good.detail
        bad = health.check_mail(settings.replace(mail_url=url.format("wrong-password")))
        assert not bad.ok and "refused the login" in bad.detail
        assert "wrong-password" not in bad.detail
        assert sink.received() == []
    finally:
        sink.stop()


def test_mail_check_fails_when_nothing_listens_or_the_outbox_cannot_be(
    settings: Settings, tmp_path: Path
) -> None:
    down = health.check_mail(settings.replace(mail_url=f"smtp://127.0.0.1:{CLOSED_PORT}"))
    assert not down.ok and "cannot connect" in down.detail
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    check = health.check_mail(settings.replace(mail_url=f"maildir://{blocker}/outbox"))
    assert not check.ok and "not writable" in check.detail
    assert health.check_mail(settings).ok  # the embedded maildir


def test_files_check(settings: Settings) -> None:
    home = settings.home
    for path in [home, *home.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    assert health.check_files(settings).ok
    (home / "dispatcher.db").chmod(0o644)
    check = health.check_files(settings)
    assert not check.ok and "dispatcher.db (644)" in check.detail
    assert check.fix.startswith(f"chmod -R go-rwx {home}")
    (home / "dispatcher.db").chmod(0o600)
    home.chmod(0o755)
    assert not health.check_files(settings).ok


def test_heartbeat_checks(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    checks = by_name(health.check_heartbeats(settings, session_factory))
    assert not checks["beat"].ok and "dispatcher beat" in checks["beat"].fix
    assert not checks["workers"].ok and "dispatcher worker" in checks["workers"].fix
    with session_scope(session_factory) as session:
        write_heartbeat(session, BEAT, "beat@here")
        write_heartbeat(session, WORKER, "w1@here")
    checks = by_name(health.check_heartbeats(settings, session_factory))
    assert checks["beat"].ok and checks["workers"].ok, checks


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DISPATCHER_HOME", str(settings.home))
    monkeypatch.setenv("DISPATCHER_SECRET_KEYS", TEST_KEYS)
    for path in [settings.home, *settings.home.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    return settings


def test_doctor_command_exit_code_and_advice(
    cli_env: Settings, session_factory: sessionmaker[Session]
) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["doctor"])
    assert result.exit_code == 1
    assert "FAIL beat" in result.output and "fix: run one `dispatcher beat`" in result.output
    with session_scope(session_factory) as session:
        write_heartbeat(session, BEAT, "beat@here")
        write_heartbeat(session, WORKER, "w1@here")
    result = runner.invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("all good")
    os.chmod(cli_env.home / "dispatcher.db", 0o664)
    result = runner.invoke(main, ["doctor", "--json"])
    assert result.exit_code == 1
    assert '"name": "files", "ok": false' in result.output


def test_doctor_with_a_database_that_is_not_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCHER_HOME", str(tmp_path / "new"))
    monkeypatch.setenv("DISPATCHER_SECRET_KEYS", TEST_KEYS)
    result = CliRunner().invoke(main, ["doctor", "--skip", "files"])
    assert result.exit_code == 1
    assert "fix: run `dispatcher db upgrade`" in result.output
    assert "beat" not in result.output  # heartbeats wait until the schema is there


def test_dkim_key_is_checked_and_the_record_to_publish_is_named(
    settings: Settings, tmp_path: Path
) -> None:
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    assert health.check_dkim(settings).ok  # not configured: nothing to check
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    check = health.check_dkim(settings.replace(dkim_key_file=str(pem), dkim_selector="s1"))
    assert check.ok and "s1._domainkey.killertracks.com" in check.detail
    record = check.detail.split(": ", 1)[1]
    assert record.startswith("v=DKIM1; k=rsa; p=")
    # The record named really verifies mail the dispatcher signs with that key.
    message = b"From: a@killertracks.com\r\nSubject: x\r\n\r\nbody\r\n"
    signed = dkim.sign(message, b"s1", b"killertracks.com", pem.read_bytes()) + message
    assert dkim.verify(signed, dnsfunc=lambda *_, **__: record.encode())
    pem.write_bytes(b"not a key")
    broken = health.check_dkim(settings.replace(dkim_key_file=str(pem)))
    assert not broken.ok and "DKIM key cannot be used" in broken.detail and broken.fix


def _dkim_settings(settings: Settings, tmp_path: Path, name: str = "dkim.pem") -> Settings:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / name
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return settings.replace(dkim_key_file=str(pem), dkim_selector="s1")


def _published(record: str) -> list[bytes]:
    """The record as DNS operators publish a long one: strings of at most 255 bytes."""
    raw = record.encode()
    return [raw[i : i + 255] for i in range(0, len(raw), 255)]


def test_doctor_looks_up_the_published_dkim_record(
    cli_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.dns_server import dns_server

    settings = cli_env
    ours = _dkim_settings(settings, tmp_path)
    other = _dkim_settings(settings, tmp_path, "other.pem")
    name = "s1._domainkey.killertracks.com"
    record = health.check_dkim(ours).detail.split(": ", 1)[1]
    other_record = health.check_dkim(other).detail.split(": ", 1)[1]
    assert health.check_dkim_dns(settings) == []  # DKIM not configured: nothing to look up
    cases = {
        "matches": ({name: [_published(record)]}, True, "publishes this key"),
        "absent": ({}, False, f"no TXT record at {name}"),
        "rotated": ({name: [_published(other_record)]}, False, "another public key"),
        "revoked": ({name: [[b"v=DKIM1; k=rsa; p="]]}, False, "revoked"),
        "two": (
            {name: [_published(record), _published(other_record)]},
            False,
            "2 DKIM records",
        ),
        "spf only": ({name: [[b"v=spf1 -all"]]}, False, "no DKIM record among"),
        "ed25519": ({name: [[b"v=DKIM1; k=ed25519; p=abc"]]}, False, "k=ed25519"),
    }
    for case, (zone, ok, detail) in cases.items():
        with dns_server(zone) as nameserver:
            [check] = health.check_dkim_dns(ours, nameserver)
        assert check.name == "dkim-dns"
        assert check.ok is ok and detail in check.detail, (case, check)
        if not ok and case != "ed25519":
            assert record in check.fix, case  # the fix names what to publish
    # Through the command, as an operator runs it.
    monkeypatch.setenv("DISPATCHER_DKIM_KEY_FILE", ours.dkim_key_file)
    monkeypatch.setenv("DISPATCHER_DKIM_SELECTOR", "s1")
    skip = ["--skip", "broker", "--skip", "mail", "--skip", "heartbeats", "--skip", "files"]
    with dns_server({name: [_published(other_record)]}) as nameserver:
        result = CliRunner().invoke(main, ["doctor", *skip, "--nameserver", nameserver])
    assert result.exit_code == 1
    assert "FAIL dkim-dns" in result.output and "another public key" in result.output
