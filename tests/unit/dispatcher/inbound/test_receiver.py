"""The SMTP/LMTP receiver on 127.0.0.1: mailboxes it serves, limits, bad input recorded."""

from __future__ import annotations

import base64
import io
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.inbound.apply import process_message
from dispatcher.inbound.receiver import start_receiver
from dispatcher.models import InboundMessage
from dispatcher.settings import Settings
from suppression.models import Suppression
from suppression.tokens import TokenSigner
from tests.support.web_server import free_port
from workers.process import wait_until

CORPUS = Path(__file__).resolve().parents[3] / "data" / "inbound"


@pytest.fixture(params=["smtp", "lmtp"])
def receiver(
    request: pytest.FixtureRequest, settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[tuple[int, bool]]:
    settings = settings.replace(inbound_max_bytes=2 * 1024 * 1024)
    port = free_port()
    lmtp = request.param == "lmtp"
    controller, drainer = start_receiver(
        settings, session_factory, host="127.0.0.1", port=port, lmtp=lmtp
    )
    yield port, lmtp
    drainer.stop()
    controller.stop()


def client(port: int, lmtp: bool) -> smtplib.SMTP:
    if lmtp:
        conn = smtplib.LMTP("127.0.0.1", port, timeout=60)
        conn.ehlo_or_helo_if_needed = lambda: conn.ehlo("mx.example")  # type: ignore[method-assign]
        return conn
    return smtplib.SMTP("127.0.0.1", port, timeout=60)


def test_only_the_bounce_and_unsubscribe_mailboxes_are_served(receiver: tuple[int, bool]) -> None:
    with client(*receiver) as conn:
        conn.ehlo("mx.example")
        conn.mail("")
        assert conn.rcpt("info@killertracks.com")[0] == 550
        assert conn.rcpt("bounces+d1.abc@killertracks.com")[0] == 250
        assert conn.rcpt("unsubscribe@killertracks.com")[0] == 250


def test_a_message_over_the_size_limit_is_refused(receiver: tuple[int, bool]) -> None:
    raw = b"From: a@b\r\nSubject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 3000
    with client(*receiver) as conn, pytest.raises(smtplib.SMTPException):
        conn.sendmail("", ["bounces@killertracks.com"], raw)


def test_bad_input_is_recorded_and_applies_nothing(
    receiver: tuple[int, bool], session_factory: sessionmaker[Session]
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb", b"\0" * (20 * 1024 * 1024))
    bomb = (
        b"From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered Mail\r\nMessage-ID: <z@x>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="Z"\r\n\r\n--Z\r\n'
        b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(archive.getvalue()).replace(b"\n", b"\r\n")
        + b"\r\n--Z--\r\n"
    )
    truncated = (
        b"From: MAILER-DAEMON@mx.example\r\nMessage-ID: <t@x>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; v@x"
    )
    charset = (
        b"From: =?x-klingon?q?Q=FF?= <q@example.org>\r\nMessage-ID: <c@x>\r\n"
        b"Subject: =?utf-8?b?////?=\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\n\xff\r\n"
    )
    with client(*receiver) as conn:
        for raw in (bomb, truncated, charset):
            conn.sendmail("", ["bounces@killertracks.com"], raw)
    with session_scope(session_factory) as session:
        rows = {r.key: r.outcome for r in session.scalars(select(InboundMessage))}
        # The bomb reads as a bounce without a tag of ours; the others as nothing to act on.
        assert rows == {"mid:<z@x>": "unmatched", "mid:<t@x>": "ignored", "mid:<c@x>": "ignored"}
        assert session.scalars(select(Suppression)).all() == []


def test_a_20_megabyte_message_is_processed_in_bounded_memory(
    settings: Settings, session: Session
) -> None:
    raw = b"From: a@example.org\r\nMessage-ID: <big@x>\r\nSubject: hi\r\n\r\n" + (
        b"y" * 998 + b"\r\n"
    ) * (20 * 1024)
    tracemalloc.start()
    try:
        done = process_message(
            session, settings, TokenSigner(settings.secret_keys), raw, source="test"
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done.outcome == "ignored" and done.report.truncated
    row = session.scalars(select(InboundMessage)).one()
    assert row.raw is not None and len(row.raw) == settings.inbound_keep_bytes
    assert row.raw_size == len(raw)
    # The message itself is 20 MB; processing it adds a bounded amount, not a multiple.
    assert peak < 16 * 1024 * 1024, peak


def test_dispatcher_inbound_serve_runs_until_stopped(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": ",".join(settings.secret_keys),
    }
    argv = [sys.executable, "-c", "from workers.cli import main; main()"]
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [*argv, "inbound", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, 120, 0.2, what="receiver listening")
        raw = (CORPUS / "local" / "gmail_dsn.eml").read_bytes().replace(b"\n", b"\r\n")
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as conn:
            conn.ehlo("mx.example")
            conn.mail("")
            conn.rcpt("bounces@killertracks.com")
            assert conn.data(raw) == (250, b"2.0.0 unmatched")  # not ours: nothing changed
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        log.close()
