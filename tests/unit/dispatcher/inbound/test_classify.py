"""Classification of real-world bounces, complaints, auto-replies and unsubscribes, and of
hostile input: bounded, recorded as something, never an exception."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import pytest

from dispatcher.inbound.classify import HEADER_LIMIT, Kind, classify

CORPUS = Path(__file__).resolve().parents[3] / "data" / "inbound"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message_gets_its_kind_and_recipients(name: str) -> None:
    want = EXPECTED[name]
    report = classify((CORPUS / name).read_bytes())
    assert report.kind == want["kind"], report.why
    if want["recipients"]:
        assert sorted(report.recipients) == sorted(r.lower() for r in want["recipients"])


def test_corpus_covers_every_kind_but_unparsed() -> None:
    kinds = {w["kind"] for w in EXPECTED.values()}
    assert kinds == {str(k) for k in Kind} - {"unparsed"}


def _dsn(action: str, status: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example\r\nTo: bounces@killertracks.com\r\n"
        "Subject: Undelivered Mail\r\nMessage-ID: <d1@mx.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n"
        f"\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: {action}\r\nStatus: {status}\r\n"
        "\r\n--B--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("action", "status", "kind"),
    [
        ("failed", "5.1.1", Kind.HARD_BOUNCE),
        ("failed", "4.4.7", Kind.HARD_BOUNCE),  # retries expired: final
        ("failed", "5.2.2", Kind.SOFT_BOUNCE),  # mailbox full may empty
        ("delayed", "4.2.0", Kind.SOFT_BOUNCE),
        ("delivered", "2.0.0", Kind.NOT_FEEDBACK),
    ],
)
def test_dsn_action_and_status_decide(action: str, status: str, kind: Kind) -> None:
    assert classify(_dsn(action, status)).kind == kind


def test_an_auto_reply_to_a_marketing_message_is_not_an_unsubscribe() -> None:
    raw = (
        b"From: a@example.org\r\nTo: unsubscribe@killertracks.com\r\n"
        b"Auto-Submitted: auto-replied\r\nSubject: Re: unsubscribe\r\n\r\naway\r\n"
    )
    assert classify(raw).kind == Kind.AUTO_REPLY


def test_truncated_mime_is_still_read_or_recorded() -> None:
    raw = (CORPUS / "local" / "gmail_dsn.eml").read_bytes()
    cut = raw[: raw.index(b"Action:")]
    report = classify(cut)
    # From the mailer daemon with a failure subject: a bounce whose recipient only a VERP
    # return path can name (so nobody is suppressed on the strength of this text alone).
    assert report.kind == Kind.HARD_BOUNCE
    assert report.recipients == ()


def test_wrong_and_unknown_charsets_do_not_stop_classification() -> None:
    raw = (
        b"From: =?x-unknown?q?J=F6rg?= <j@example.org>\r\nTo: unsubscribe@killertracks.com\r\n"
        b"Subject: =?utf-8?b?////?= unsubscribe\r\n"
        b"Content-Type: text/plain; charset=klingon\r\n\r\n\xff\xfe bytes\r\n"
    )
    report = classify(raw)
    assert report.kind == Kind.UNSUBSCRIBE
    assert report.recipients == ("j@example.org",)


def test_a_20_megabyte_message_is_parsed_only_up_to_the_limit() -> None:
    head = (CORPUS / "local" / "customer_question.eml").read_bytes()
    raw = head + b"x" * 76 + (b"\r\n" + b"y" * 76) * (20 * 1024 * 1024 // 78)
    report = classify(raw)
    assert report.kind == Kind.NOT_FEEDBACK
    assert report.truncated and report.size > 20 * 1024 * 1024


def test_a_huge_header_is_unparsed_not_parsed() -> None:
    raw = b"From: a@example.org\r\nX-Junk: a\r\n" + b" b\r\n" * 1_000_000 + b"\r\nbody"
    report = classify(raw)
    assert report.kind == Kind.UNPARSED
    assert "header" in report.why
    assert len(raw) > HEADER_LIMIT


def test_a_zip_bomb_attachment_is_never_expanded() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.txt", b"\0" * (50 * 1024 * 1024))
    attachment = base64.encodebytes(buffer.getvalue())
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: bounces@killertracks.com\r\n"
        b"Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="Z"\r\n\r\n--Z\r\n'
        b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + attachment
        + b"\r\n--Z--\r\n"
    )
    assert len(raw) < 200 * 1024
    report = classify(raw)
    assert report.kind == Kind.HARD_BOUNCE  # recognised by its subject; no recipients read
    assert report.recipients == ()


@pytest.mark.parametrize("raw", [b"", b"\r\n\r\n", b"\x00\x01\x02", b"no colon here"])
def test_garbage_is_unparsed_or_not_feedback(raw: bytes) -> None:
    assert classify(raw).kind in {Kind.UNPARSED, Kind.NOT_FEEDBACK}
