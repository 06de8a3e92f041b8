"""What comes back, end to end: a real worker sends a campaign to the SMTP sink, Postfix-style
DSNs, an ARF complaint, a mailto unsubscribe and a forged bounce come back to the inbound
receiver on 127.0.0.1, and the next campaign skips exactly the addresses they were about."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import func, select

from dispatcher.campaigns.fanout import fan_out
from dispatcher.campaigns.services import (
    campaign_report,
    create_campaign,
    pause_campaign,
    resume_campaign,
    schedule_campaign,
)
from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.inbound.receiver import start_receiver
from dispatcher.models import Delivery, InboundMessage
from suppression.models import Address, Event, Suppression
from tests.factories import make_contact
from tests.integration.test_campaign_end_to_end import run_campaign
from tests.support.backends import Backend
from tests.support.web_server import free_port
from workers.process import WorkerProcess, wait_until

PEOPLE = ["ann", "bounce", "complain", "victim", "unsub", "soft"]
ADDRESS = {p: f"{p}@example.org" for p in PEOPLE}


def postfix_dsn(original: EmailMessage, status: str = "5.1.1", action: str = "failed") -> bytes:
    """A bounce as Postfix writes it: to the envelope sender, the original's headers inside."""
    rcpt = original.envelope_to[0]  # type: ignore[attr-defined]
    headers = "".join(f"{k}: {v}\r\n" for k, v in original.items() if k != "List-Unsubscribe")
    return (
        f"Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        f"To: {original.envelope_from}\r\n"  # type: ignore[attr-defined]
        f"Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <20261201.{rcpt.split('@')[0]}.{status}@mx.example.org>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="PFX"\r\n\r\n'
        "--PFX\r\nContent-Description: Notification\r\nContent-Type: text/plain\r\n\r\n"
        "This is the mail system at host mx.example.org.\r\n\r\n"
        f"<{rcpt}>: host mx.example.org said: 550 5.1.1 unknown user\r\n\r\n"
        "--PFX\r\nContent-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\nX-Postfix-Queue-ID: 4Fq1x2\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nOriginal-Recipient: rfc822;{rcpt}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} unknown user\r\n\r\n"
        "--PFX\r\nContent-Description: Undelivered Message Headers\r\n"
        f"Content-Type: text/rfc822-headers\r\n\r\n{headers}\r\n--PFX--\r\n"
    ).encode()


def arf(original: EmailMessage) -> bytes:
    """A Yahoo-style feedback report sent to the plain bounces@ (no VERP): only the
    Message-ID inside says which message it was."""
    return (
        "From: feedback@arf.mail.yahoo.example\r\nTo: bounces@killertracks.com\r\n"
        "Subject: FW: new tracks\r\nMessage-ID: <arf-1@arf.mail.yahoo.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"\r\n\r\n'
        "--ARF\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        "--ARF\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: Yahoo!-Mail-Feedback/2.0\r\nVersion: 1\r\n\r\n"
        "--ARF\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: {original['From']}\r\nTo: {original['To']}\r\n"
        f"Message-ID: {original['Message-ID']}\r\n\r\n--ARF--\r\n"
    ).encode()


def mailto_unsubscribe(original: EmailMessage) -> tuple[str, bytes]:
    mailto = [
        u
        for u in str(original["List-Unsubscribe"]).replace(" ", "").split(",")
        if u.startswith("<mailto:")
    ][0].strip("<>")
    mailbox, _, query = mailto.removeprefix("mailto:").partition("?")
    subject = unquote(query.removeprefix("subject="))
    rcpt = original.envelope_to[0]  # type: ignore[attr-defined]
    raw = (
        f"From: {rcpt}\r\nTo: {mailbox}\r\nSubject: {subject}\r\n"
        f"Message-ID: <unsub-1@example.org>\r\n\r\n"
    ).encode()
    return mailbox, raw


def send(port: int, to: str, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("mx.example.org")
        client.mail("")
        code, _ = client.rcpt(to)
        assert code == 250, (code, to)
        client.putcmd("data")
        client.getreply()
        client.send(
            smtplib.quotedata(raw.decode("utf-8", "surrogateescape")).encode() + b"\r\n.\r\n"
        )
        return client.getreply()


def test_reports_reach_suppression_and_the_next_campaign_skips_them(
    backend: Backend, smtp_sink, tmp_path: Path
) -> None:
    sessions = make_sessionmaker(make_engine(backend.settings.database_url))
    with session_scope(sessions) as session:
        for address in ADDRESS.values():
            make_contact(session, address)
    env = backend.env(mail_url=smtp_sink.url)

    with WorkerProcess(env, tmp_path / "worker1.log"):
        run_campaign(backend, "first")
    sent = {m.envelope_to[0]: m for m in smtp_sink.messages()}
    assert set(sent) == set(ADDRESS.values())
    assert all(m.envelope_from.startswith("bounces+d") for m in sent.values())

    # The second campaign is fanned out and paused: its mail waits in the queue.
    with session_scope(sessions) as session:
        second = create_campaign(
            session, backend.settings, name="second", subject="more", template="new-releases"
        ).id
        schedule_campaign(session, backend.settings, second)
    list(fan_out(sessions, second, backend.settings.batch_size))
    with session_scope(sessions) as session:
        pause_campaign(session, second)

    port = free_port()
    controller, drainer = start_receiver(
        backend.settings, sessions, host="127.0.0.1", port=port, lmtp=False
    )
    try:
        victim = sent[ADDRESS["victim"]]
        forged_to = victim.envelope_from.split(".")[0] + "." + "0" * 20 + "@killertracks.com"
        forged = postfix_dsn(victim).replace(victim.envelope_from.encode(), forged_to.encode())
        forged = forged.replace(victim["Message-ID"].encode(), b"<c1.r4.0000@killertracks.com>")
        unsub_to, unsub_raw = mailto_unsubscribe(sent[ADDRESS["unsub"]])
        mailbox = [
            (sent[ADDRESS["bounce"]].envelope_from, postfix_dsn(sent[ADDRESS["bounce"]])),
            ("bounces@killertracks.com", arf(sent[ADDRESS["complain"]])),
            (forged_to, forged),
            (unsub_to, unsub_raw),
            (
                sent[ADDRESS["soft"]].envelope_from,
                postfix_dsn(sent[ADDRESS["soft"]], "4.2.0", "delayed"),
            ),
        ]
        replies = [send(port, to, raw) for to, raw in mailbox]
        assert [r[0] for r in replies] == [250] * len(mailbox)
        assert [r[1].split()[-1] for r in replies] == [
            b"applied",
            b"applied",
            b"unmatched",
            b"applied",
            b"applied",
        ]

        def state() -> tuple[int, int, int]:
            with session_scope(sessions) as session:
                return (
                    int(session.scalar(select(func.count()).select_from(Suppression)) or 0),
                    int(session.scalar(select(func.count()).select_from(Event)) or 0),
                    int(session.scalar(select(func.count()).select_from(InboundMessage)) or 0),
                )

        before = state()
        # Replaying the whole mailbox changes nothing more.
        replies = [send(port, to, raw) for to, raw in mailbox]
        assert {r[1].split()[-1] for r in replies} == {b"duplicate"}
        assert state() == before
    finally:
        drainer.stop()
        controller.stop()

    with session_scope(sessions) as session:
        suppressed = {
            (a, r)
            for a, r in session.execute(
                select(Address.address, Suppression.reason).join(
                    Address, Address.id == Suppression.address_id
                )
            )
        }
        assert suppressed == {
            (ADDRESS["bounce"], "hard_bounce"),
            (ADDRESS["complain"], "complaint"),
            (ADDRESS["unsub"], "unsubscribe"),
        }
        cancelled = session.scalars(
            select(Address.address)
            .join(Delivery, Delivery.address_id == Address.id)
            .where(Delivery.campaign_id == second, Delivery.status == "cancelled")
        ).all()
        assert set(cancelled) == {ADDRESS["bounce"], ADDRESS["complain"], ADDRESS["unsub"]}
        resume_campaign(session, second)

    smtp_sink.clear()
    with WorkerProcess(env, tmp_path / "worker2.log"):

        def second_done() -> bool:
            with session_scope(sessions) as session:
                return campaign_report(session, second).status == "done"

        wait_until(second_done, 120, what="second campaign done")
    received = {m.envelope_to[0] for m in smtp_sink.messages()}
    assert received == {ADDRESS["ann"], ADDRESS["victim"], ADDRESS["soft"]}
