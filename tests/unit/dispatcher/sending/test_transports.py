"""Transports against real endpoints: a maildir on disk and the aiosmtpd sink on 127.0.0.1."""

from __future__ import annotations

import logging
import mailbox
import re
import socket
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dispatcher.sending.transports import (
    PermanentSendError,
    SmtpOptions,
    TransientSendError,
    UncertainSendError,
    _data_payload,
    close_idle_transports,
    open_transport,
    parse_mail_url,
    reused_transport,
)
from tests.support.smtp_sink import SmtpSink, self_signed_certificate

SENDER = "info@killertracks.com"


def message(n: int, to: str = "ann@example.com", body: str = "new tracks\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Killer Tracks <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = f"message {n}"
    msg["Message-ID"] = f"<{n}.test@killertracks.com>"
    msg.set_content(body)
    return msg.as_bytes(policy=policy.SMTP)


# --- maildir ----------------------------------------------------------------------------------


def test_maildir_messages_parse_back_with_their_recipient(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    with open_transport(f"maildir://{outbox}") as transport:
        assert not outbox.exists(), "folders appear with the first message, not before"
        transport.send(SENDER, "ann@example.com", message(1))
        transport.send(SENDER, "bob@example.com", message(2, "bob@example.com", ".dot\n"))
    assert sorted(p.name for p in outbox.iterdir()) == ["cur", "new", "tmp"]
    assert list((outbox / "tmp").iterdir()) == []
    box = mailbox.Maildir(outbox, create=False)
    got = {m["X-Envelope-To"]: m for m in box}
    assert set(got) == {"<ann@example.com>", "<bob@example.com>"}
    bob = got["<bob@example.com>"]
    assert bob["Subject"] == "message 2" and bob["X-Envelope-From"] == f"<{SENDER}>"
    assert bob.get_payload(decode=True) == b".dot\n"


def test_maildir_same_message_twice_is_one_file(tmp_path: Path) -> None:
    url = f"maildir://{tmp_path}"
    with open_transport(url) as transport:
        transport.send(SENDER, "ann@example.com", message(1))
        transport.send(SENDER, "ann@example.com", message(1))
    with open_transport(url) as transport:  # a retried batch
        transport.send(SENDER, "ann@example.com", message(1))
        transport.send(SENDER, "ann@example.com", message(2))
        transport.send(SENDER, "bob@example.com", message(1))  # same Message-ID, other person
    assert len(list((tmp_path / "new").iterdir())) == 3


def test_maildir_that_cannot_be_written_is_transient(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    with (
        open_transport(f"maildir://{tmp_path}/file/outbox") as transport,
        pytest.raises(TransientSendError, match="not writable"),
    ):
        transport.send(SENDER, "ann@example.com", message(1))


def test_line_break_in_an_envelope_address_is_refused_before_writing(tmp_path: Path) -> None:
    with (
        open_transport(f"maildir://{tmp_path}") as transport,
        pytest.raises(PermanentSendError) as caught,
    ):
        transport.send(SENDER, "ann@example.com\r\nX-Evil: 1", message(1))
    assert caught.value.code == 501 and not caught.value.recipient_refused
    assert not (tmp_path / "new").exists()


# --- SMTP: delivery and connection reuse ------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_a_batch_goes_over_one_connection(smtp_sink: SmtpSink, pipelining: bool) -> None:
    smtp_sink.pipelining = pipelining
    with open_transport(smtp_sink.url) as transport:
        for n in range(20):
            transport.send(SENDER, f"r{n}@example.com", message(n, f"r{n}@example.com"))
    got = smtp_sink.wait_for_count(20, timeout=10)
    assert smtp_sink.connections == 1
    assert {r.connection for r in got} == {1}
    assert [m.envelope_to for m in smtp_sink.messages()] == [
        (f"r{n}@example.com",) for n in range(20)
    ]
    assert {m.envelope_from for m in smtp_sink.messages()} == {SENDER}


def test_body_survives_dot_stuffing_and_bare_line_feeds(smtp_sink: SmtpSink) -> None:
    body = ".starts with a dot\n..two\nlast line no newline"
    raw = message(1, body=body).replace(b"\r\n", b"\n")  # bare LF, as some renderers write
    with open_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "ann@example.com", raw)
    (got,) = smtp_sink.wait_for_count(1, timeout=10)
    assert b"\r\n.starts with a dot\r\n..two\r\nlast line no newline\r\n" in got.data
    assert b"\n" not in got.data.replace(b"\r\n", b"")  # every line end became CRLF
    parsed = got.message
    assert parsed["Subject"] == "message 1"
    assert parsed.get_content().replace("\r\n", "\n") == body + "\n"


def _reference_payload(message: bytes) -> bytes:
    """RFC 5321 4.5.2 written plainly: CRLF line ends, a dot doubled at each line's start,
    the last line ended, then the "." line."""
    data = re.sub(rb"(?<!\r)\n", b"\r\n", message)
    data = re.sub(rb"^\.", b"..", data, flags=re.MULTILINE)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


@given(st.binary().map(lambda b: bytes(b".\r\na"[x % 4] for x in b)))
@example(b".")
@example(b"\r.\n.")
@example(b"a\r\n.\n..\r")
def test_the_data_payload_is_dot_stuffed_as_rfc_5321_says(message: bytes) -> None:
    assert _data_payload(message) == _reference_payload(message)


def test_nothing_is_connected_for_an_empty_batch(smtp_sink: SmtpSink) -> None:
    with open_transport(smtp_sink.url):
        pass
    assert smtp_sink.connections == 0


def test_utf8_mailbox_needs_smtputf8(smtp_sink: SmtpSink) -> None:
    with open_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "jösé@example.com", message(1))
    assert smtp_sink.wait_for_count(1, timeout=10)[0].recipients == ["jösé@example.com"]
    smtp_sink.smtputf8 = False
    with open_transport(smtp_sink.url) as transport:
        with pytest.raises(PermanentSendError, match="SMTPUTF8") as caught:
            transport.send(SENDER, "jösé@example.com", message(2))
        transport.send(SENDER, "ann@example.com", message(3))
    assert caught.value.code == 553 and not caught.value.recipient_refused
    assert smtp_sink.count_for("ann@example.com") == 1


# --- SMTP: the server says no -----------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_550_at_rcpt_is_permanent_and_names_the_recipient(
    smtp_sink: SmtpSink, pipelining: bool
) -> None:
    smtp_sink.pipelining = pipelining
    smtp_sink.reject["gone@example.com"] = "550 5.1.1 no such user"
    with open_transport(smtp_sink.url) as transport:
        with pytest.raises(PermanentSendError) as caught:
            transport.send(SENDER, "gone@example.com", message(1))
        transport.send(SENDER, "ann@example.com", message(2))  # the connection goes on
    error = caught.value
    assert (error.code, error.recipient, error.recipient_refused) == (
        550,
        "gone@example.com",
        True,
    )
    assert "RCPT TO answered 550 5.1.1 no such user" in str(error)
    assert [r.recipients for r in smtp_sink.wait_for_count(1, timeout=10)] == [["ann@example.com"]]
    assert smtp_sink.connections == 1


def test_refused_sender_is_permanent_but_not_the_recipients_fault(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject(SENDER, "553 5.7.1 sender not allowed")
    with (
        open_transport(smtp_sink.url) as transport,
        pytest.raises(PermanentSendError, match="MAIL FROM answered 553") as caught,
    ):
        transport.send(SENDER, "ann@example.com", message(1))
    assert caught.value.code == 553 and not caught.value.recipient_refused
    assert smtp_sink.received() == []


@pytest.mark.parametrize("at", ["rcpt", "data"])
def test_451_is_transient_and_the_connection_stays(smtp_sink: SmtpSink, at: str) -> None:
    smtp_sink.tempfail_next(1, "451 4.3.0 try later", at=at)  # type: ignore[arg-type]
    with open_transport(smtp_sink.url) as transport:
        with pytest.raises(TransientSendError, match="451 4.3.0 try later") as caught:
            transport.send(SENDER, "ann@example.com", message(1))
        assert not caught.value.connection_lost
        transport.send(SENDER, "ann@example.com", message(1))
    assert len(smtp_sink.wait_for_count(1, timeout=10)) == 1
    assert smtp_sink.connections == 1


def test_554_after_the_body_is_permanent_for_the_message_only(smtp_sink: SmtpSink) -> None:
    smtp_sink.tempfail_next(1, "554 5.6.0 content rejected", at="data")
    with open_transport(smtp_sink.url) as transport, pytest.raises(PermanentSendError) as caught:
        transport.send(SENDER, "ann@example.com", message(1))
    assert caught.value.code == 554 and not caught.value.recipient_refused
    assert "end of DATA answered 554" in str(caught.value)


def test_421_closes_the_connection_and_the_next_send_reconnects(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject["ann@example.com"] = "421 4.3.2 shutting down"
    with open_transport(smtp_sink.url) as transport:
        with pytest.raises(TransientSendError, match="421") as caught:
            transport.send(SENDER, "ann@example.com", message(1))
        assert caught.value.connection_lost
        transport.send(SENDER, "bob@example.com", message(2))
    assert smtp_sink.connections == 2
    assert smtp_sink.count_for("bob@example.com") == 1


# --- SMTP: the connection breaks --------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_drop_after_the_body_is_uncertain_then_a_new_connection(
    smtp_sink: SmtpSink, pipelining: bool
) -> None:
    smtp_sink.pipelining = pipelining
    with open_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "ann@example.com", message(1))
        smtp_sink.drop_connection_after_data(1)
        with pytest.raises(UncertainSendError):
            transport.send(SENDER, "bob@example.com", message(2))
        transport.send(SENDER, "cid@example.com", message(3))
    got = smtp_sink.wait_for_count(3, timeout=10)
    assert [(r.recipients, r.dropped, r.connection) for r in got] == [
        (["ann@example.com"], False, 1),
        (["bob@example.com"], True, 1),  # it did arrive: the sender could not know
        (["cid@example.com"], False, 2),
    ]


# --- SMTP: the next message announced with this one's end (one round trip a message) -------


def test_the_next_envelope_goes_with_the_message_before_it(smtp_sink: SmtpSink) -> None:
    """send(..., then=next): the next message's RCPT reaches the server with this message's
    end, before its own send(); that send() then delivers it over the same connection."""
    mails = [message(n, f"r{n}@example.com") for n in range(4)]
    with open_transport(smtp_sink.url) as transport:
        for n in range(4):
            then = (SENDER, f"r{n + 1}@example.com", mails[n + 1]) if n < 3 else None
            transport.send(SENDER, f"r{n}@example.com", mails[n], then=then)
            if then is not None:
                assert smtp_sink.recipients_seen()[-1] == f"r{n + 1}@example.com"
                assert smtp_sink.count_for(f"r{n + 1}@example.com") == 0
    got = smtp_sink.wait_for_count(4, timeout=10)
    assert [r.recipients for r in got] == [[f"r{n}@example.com"] for n in range(4)]
    assert smtp_sink.recipients_seen() == [f"r{n}@example.com" for n in range(4)]
    assert smtp_sink.connections == 1


def test_while_waiting_runs_once_a_message_has_gone_and_before_its_reply(
    smtp_sink: SmtpSink,
) -> None:
    """The caller's work overlaps the round trip: when while_waiting runs, the whole message
    is at the server already (it stores a message before it answers)."""
    seen: list[int] = []

    def meanwhile() -> None:
        seen.append(len(smtp_sink.wait_for_count(len(seen) + 1, timeout=10)))

    with open_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "a@example.com", message(1), while_waiting=meanwhile)
        transport.send(
            SENDER,
            "b@example.com",
            message(2),
            then=(SENDER, "c@example.com", message(3)),
            while_waiting=meanwhile,
        )
        transport.send(SENDER, "c@example.com", message(3), while_waiting=meanwhile)
    assert seen == [1, 2, 3]


def test_an_announced_message_sent_by_nobody_is_never_delivered(smtp_sink: SmtpSink) -> None:
    """The caller announced b, then sent c instead (or closed): the server had opened DATA
    for b, so the connection is dropped without a word — b never arrives, c arrives once."""
    with open_transport(smtp_sink.url) as transport:
        transport.send(
            SENDER, "a@example.com", message(1), then=(SENDER, "b@example.com", message(2))
        )
        transport.send(SENDER, "c@example.com", message(3))
        transport.send(
            SENDER, "d@example.com", message(4), then=(SENDER, "e@example.com", message(5))
        )
    smtp_sink.wait_for_count(3, timeout=10)
    assert [r.recipients for r in smtp_sink.received()] == [
        ["a@example.com"],
        ["c@example.com"],
        ["d@example.com"],
    ]
    assert smtp_sink.connections == 2  # b's DATA was ended by dropping the first


def test_closing_with_a_message_announced_drops_at_once(smtp_sink: SmtpSink) -> None:
    """No QUIT while the server waits for a body: it would be read as the message's text and
    the close would wait for a reply that never comes (the URL's 5 s timeout)."""
    import time

    with reused_transport(f"{smtp_sink.url}?timeout=5") as transport:
        transport.send(
            SENDER, "a@example.com", message(1), then=(SENDER, "b@example.com", message(2))
        )
        started = time.monotonic()
    assert time.monotonic() - started < 4
    assert [r.recipients for r in smtp_sink.wait_for_count(1, timeout=10)] == [["a@example.com"]]
    close_idle_transports()  # nothing was kept: the connection was not fit for another batch
    with reused_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "c@example.com", message(3))
    assert smtp_sink.connections == 2
    assert smtp_sink.count_for("b@example.com") == 0


def test_an_announced_recipient_refused_fails_only_its_own_send(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject["gone@example.com"] = "550 5.1.1 no such user"
    with open_transport(smtp_sink.url) as transport:
        transport.send(
            SENDER, "a@example.com", message(1), then=(SENDER, "gone@example.com", message(2))
        )
        with pytest.raises(PermanentSendError) as caught:
            transport.send(
                SENDER, "gone@example.com", message(2), then=(SENDER, "c@example.com", message(3))
            )
        transport.send(SENDER, "c@example.com", message(3))
    assert caught.value.recipient_refused and caught.value.recipient == "gone@example.com"
    got = smtp_sink.wait_for_count(2, timeout=10)
    assert [r.recipients for r in got] == [["a@example.com"], ["c@example.com"]]
    assert smtp_sink.connections == 1


def test_a_message_refused_after_its_body_leaves_the_announced_one_going(
    smtp_sink: SmtpSink,
) -> None:
    smtp_sink.tempfail_next(1, "451 4.3.0 try later", at="data")
    with open_transport(smtp_sink.url) as transport:
        with pytest.raises(TransientSendError, match="451") as caught:
            transport.send(
                SENDER, "a@example.com", message(1), then=(SENDER, "b@example.com", message(2))
            )
        assert not caught.value.connection_lost
        transport.send(SENDER, "b@example.com", message(2))
    assert [r.recipients for r in smtp_sink.wait_for_count(1, timeout=10)] == [["b@example.com"]]
    assert smtp_sink.recipients_seen() == ["a@example.com", "b@example.com"]  # b's RCPT once
    assert smtp_sink.connections == 1


def test_a_drop_after_the_body_leaves_the_announced_message_to_a_new_connection(
    smtp_sink: SmtpSink,
) -> None:
    smtp_sink.drop_connection_after_data(1)
    with open_transport(smtp_sink.url) as transport:
        with pytest.raises(UncertainSendError):
            transport.send(
                SENDER, "a@example.com", message(1), then=(SENDER, "b@example.com", message(2))
            )
        transport.send(SENDER, "b@example.com", message(2))
    got = smtp_sink.wait_for_count(2, timeout=10)
    assert [(r.recipients, r.dropped, r.connection) for r in got] == [
        (["a@example.com"], True, 1),
        (["b@example.com"], False, 2),
    ]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_an_announced_envelope_the_relay_cannot_take_is_left_to_its_own_send(
    smtp_sink: SmtpSink, pipelining: bool
) -> None:
    """Without PIPELINING nothing is announced; a next envelope that is bad or needs
    SMTPUTF8 the relay lacks is not announced either: its own send() refuses it."""
    smtp_sink.pipelining = pipelining
    smtp_sink.smtputf8 = False
    with open_transport(smtp_sink.url) as transport:
        transport.send(
            SENDER, "a@example.com", message(1), then=(SENDER, "jösé@example.com", message(2))
        )
        transport.send(
            SENDER, "b@example.com", message(3), then=(SENDER, "x\r\nRSET@example.com", message(4))
        )
        with pytest.raises(PermanentSendError, match="SMTPUTF8"):
            transport.send(SENDER, "jösé@example.com", message(2))
        transport.send(
            SENDER, "c@example.com", message(5), then=(SENDER, "d@example.com", message(6))
        )
        transport.send(SENDER, "d@example.com", message(6))
    got = smtp_sink.wait_for_count(4, timeout=10)
    assert [r.recipients for r in got] == [[f"{x}@example.com"] for x in "abcd"]
    assert smtp_sink.recipients_seen() == [f"{x}@example.com" for x in "abcd"]
    assert smtp_sink.connections == 1


def test_refused_connection_is_transient_and_retried_on_next_send(smtp_sink: SmtpSink) -> None:
    smtp_sink.refuse_connections = True
    with open_transport(smtp_sink.url) as transport:
        with pytest.raises(TransientSendError, match="cannot connect") as caught:
            transport.send(SENDER, "ann@example.com", message(1))
        assert caught.value.connection_lost
        smtp_sink.refuse_connections = False
        transport.send(SENDER, "ann@example.com", message(1))
    assert smtp_sink.count_for("ann@example.com") == 1


def test_a_reused_connection_the_server_closed_is_replaced(smtp_sink: SmtpSink) -> None:
    with open_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "ann@example.com", message(1))
        smtp_sink.refuse_connections = True  # a restart: the open connection is cut
        smtp_sink.refuse_connections = False
        transport.send(SENDER, "bob@example.com", message(2))
    assert [r.connection for r in smtp_sink.wait_for_count(2, timeout=10)] == [1, 2]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections (in the backlog) and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        yield int(server.getsockname()[1])


def test_a_server_that_never_answers_times_out_as_transient(silent_server: int) -> None:
    with (
        open_transport(f"smtp://127.0.0.1:{silent_server}?timeout=0.3") as transport,
        pytest.raises(TransientSendError, match="timed out"),
    ):
        transport.send(SENDER, "ann@example.com", message(1))


# --- TLS and login ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_sink(certificate: tuple[Path, Path], request: pytest.FixtureRequest) -> Iterator[SmtpSink]:
    sink = SmtpSink(
        tls=certificate, implicit_tls=request.param, credentials={"us@er": "p:ss/w%rd"}
    ).start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.mark.parametrize("tls_sink", [False, True], ids=["starttls", "smtps"], indirect=True)
def test_tls_and_login_with_percent_encoded_credentials(
    tls_sink: SmtpSink, certificate: tuple[Path, Path]
) -> None:
    cafile = certificate[0]
    scheme, rest = tls_sink.url.split("://")
    starttls = "starttls=true&" if scheme == "smtp" else ""
    url = f"{scheme}://us%40er:p%3Ass%2Fw%25rd@{rest}?{starttls}cafile={cafile}"
    with open_transport(url) as transport:
        transport.send(SENDER, "ann@example.com", message(1))
        transport.send(SENDER, "bob@example.com", message(2))
    assert tls_sink.logins == [("us@er", "p:ss/w%rd")]
    assert len(tls_sink.wait_for_count(2, timeout=10)) == 2
    assert tls_sink.connections == 1


@pytest.mark.parametrize("tls_sink", [False], indirect=True)
def test_wrong_password_or_untrusted_certificate_is_transient(
    tls_sink: SmtpSink, certificate: tuple[Path, Path]
) -> None:
    rest = tls_sink.url.split("://")[1]
    wrong = f"smtp://us%40er:nope@{rest}?starttls=true&cafile={certificate[0]}"
    with (
        open_transport(wrong) as transport,
        pytest.raises(TransientSendError, match="refused the login.*DISPATCHER_MAIL_URL"),
    ):
        transport.send(SENDER, "ann@example.com", message(1))
    untrusted = f"smtp://{rest}?starttls=true"  # the system's CAs do not know this one
    with (
        open_transport(untrusted) as transport,
        pytest.raises(TransientSendError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        transport.send(SENDER, "ann@example.com", message(1))
    assert tls_sink.received() == []


@pytest.mark.parametrize("tls_sink", [False], indirect=True)
def test_a_refused_login_is_logged_with_the_relays_words_and_no_password(
    tls_sink: SmtpSink, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    rest = tls_sink.url.split("://")[1]
    wrong = f"smtp://us%40er:s3cret-wrong@{rest}?starttls=true&cafile={certificate[0]}"
    caplog.set_level(logging.INFO)
    with open_transport(wrong) as transport, pytest.raises(TransientSendError) as refused:
        transport.send(SENDER, "ann@example.com", message(1))
    [record] = [r for r in caplog.records if "refused the login" in r.getMessage()]
    logged = record.getMessage()
    assert record.levelno == logging.ERROR
    assert "'us@er'" in logged and "535" in logged and "Authentication" in logged
    assert "Authentication" in str(refused.value)
    assert "s3cret-wrong" not in logged + str(refused.value)


def test_tls_or_login_the_server_does_not_offer_is_transient(smtp_sink: SmtpSink) -> None:
    for url in (f"{smtp_sink.url}?starttls=true", smtp_sink.url.replace("//", "//ann:pw@")):
        with (
            open_transport(url) as transport,
            pytest.raises(TransientSendError, match="does not offer.*DISPATCHER_MAIL_URL"),
        ):
            transport.send(SENDER, "ann@example.com", message(1))
    assert smtp_sink.received() == []


# --- URLs -------------------------------------------------------------------------------------


def test_smtp_urls_parse_into_options() -> None:
    assert parse_mail_url("smtp://relay.internal") == SmtpOptions("relay.internal", 25)
    assert parse_mail_url("SMTPS://relay:2465/", timeout=5) == SmtpOptions(
        "relay", 2465, implicit_tls=True, timeout=5.0
    )
    options = parse_mail_url(
        "smtp://a%20b:c%3Ad%40@relay:587?starttls=TRUE&timeout=10&cafile=/etc/ca.pem"
    )
    assert options == SmtpOptions(
        "relay",
        587,
        starttls=True,
        username="a b",
        password="c:d@",
        timeout=10.0,
        cafile="/etc/ca.pem",
    )
    assert "c:d@" not in repr(options)
    assert parse_mail_url("smtps://relay").port == 465  # type: ignore[union-attr]
    assert parse_mail_url("maildir:///var/outbox") == Path("/var/outbox")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://relay:25", "unknown scheme 'http'"),
        ("relay:25", "unknown scheme 'relay'"),
        ("", "unknown scheme ''"),
        ("maildir://var/outbox", "absolute path"),
        ("smtp://:25", "names no host"),
        ("smtp://relay:99999", "bad port"),
        ("smtp://relay:25/inbox", "takes no path"),
        ("smtp://relay?tls=true", "unknown option tls"),
        ("smtp://relay?starttls=ture", "starttls='ture' is not true or false"),
        ("smtps://relay?starttls=true", "TLS already"),
        ("smtp://relay?timeout=soon", "timeout='soon' is not a number"),
        ("smtp://relay?timeout=0", "more than 0"),
    ],
)
def test_bad_mail_urls_are_named(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="DISPATCHER_MAIL_URL") as caught, open_transport(url):
        pass
    assert problem in str(caught.value)


# --- SMTP: a connection kept between batches --------------------------------------------------


@pytest.fixture
def kept() -> Iterator[None]:
    close_idle_transports()
    yield
    close_idle_transports()


def test_the_next_batch_reuses_the_connection_and_shutdown_closes_it(
    smtp_sink: SmtpSink, kept: None
) -> None:
    for n in range(3):  # three batches of one process
        with reused_transport(smtp_sink.url) as transport:
            transport.send(SENDER, f"r{n}@example.com", message(n, f"r{n}@example.com"))
    assert [r.connection for r in smtp_sink.wait_for_count(3, timeout=10)] == [1, 1, 1]
    close_idle_transports()  # worker shutdown: QUIT
    with reused_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "r9@example.com", message(9, "r9@example.com"))
    assert smtp_sink.wait_for_count(4, timeout=10)[-1].connection == 2


def test_a_kept_connection_the_server_dropped_is_replaced_when_taken(
    smtp_sink: SmtpSink, kept: None
) -> None:
    with reused_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "ann@example.com", message(1))
    smtp_sink.refuse_connections = True  # the relay restarted between two batches
    smtp_sink.refuse_connections = False
    with reused_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "bob@example.com", message(2))
    assert [r.connection for r in smtp_sink.wait_for_count(2, timeout=10)] == [1, 2]


def test_a_batch_that_raised_does_not_hand_its_connection_on(
    smtp_sink: SmtpSink, kept: None
) -> None:
    with pytest.raises(RuntimeError), reused_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "ann@example.com", message(1))
        raise RuntimeError("the batch failed mid-way")
    with reused_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "bob@example.com", message(2))
    assert [r.connection for r in smtp_sink.wait_for_count(2, timeout=10)] == [1, 2]


def test_a_connection_lost_mid_batch_is_not_kept(smtp_sink: SmtpSink, kept: None) -> None:
    smtp_sink.drop_connection_after_data(1)
    with reused_transport(smtp_sink.url) as transport, pytest.raises(UncertainSendError):
        transport.send(SENDER, "ann@example.com", message(1))
    with reused_transport(smtp_sink.url) as transport:
        transport.send(SENDER, "bob@example.com", message(2))
    assert smtp_sink.connections == 2
