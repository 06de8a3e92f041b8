"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd), with faults on demand.

Use the ``smtp_sink`` fixture; every fault can be set while the server runs::

    smtp_sink.reject["bob@example.com"] = "550 5.1.1 no such user"   # at RCPT TO
    smtp_sink.reject["info@example.com"] = "553 5.7.1 not yours"     # as sender: at MAIL FROM
    smtp_sink.tempfail_next(3)                     # next 3 recipients get 451 at RCPT TO
    smtp_sink.tempfail_next(1, at="data")          # next message gets 451 after its body
    smtp_sink.drop_connection_after_data(1)        # body taken, connection cut, no reply
    smtp_sink.refuse_connections = True            # the server is down (connect refused)
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


class SinkMessage(EmailMessage):
    """A received message, parsed with ``email.policy.default``, with its envelope."""

    envelope_from: str = ""
    envelope_to: tuple[str, ...] = ()


_POLICY = email.policy.default.clone(message_factory=SinkMessage)


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipients: list[str]  # lower-cased
    data: bytes
    connection: int  # which connection (1, 2, …) carried it
    dropped: bool = False  # the connection was cut before the reply (outcome hidden)
    at: float = field(default_factory=time.time)
    exact_recipients: tuple[str, ...] = ()  # RCPT TO as the client wrote it (case kept)
    mail_options: tuple[str, ...] = ()  # MAIL FROM parameters (SMTPUTF8, BODY=8BITMIME)

    @property
    def message(self) -> SinkMessage:
        parsed = email.message_from_bytes(self.data, policy=_POLICY)
        assert isinstance(parsed, SinkMessage)
        parsed.envelope_from = self.mail_from
        parsed.envelope_to = tuple(self.recipients)
        return parsed


_REPLY = re.compile(r"[2-5]\d\d( [^\r\n]*)?")


def _checked(reply: str) -> str:
    if not _REPLY.fullmatch(reply):
        raise ValueError(f"an SMTP reply is a code and text, like '550 5.1.1 no', not {reply!r}")
    return reply


class Rejections:
    """Address → the reply given at RCPT TO (or at MAIL FROM for a sender).

    ``reject["a@b"] = "550 …"``, ``del reject["a@b"]``, or call it: ``reject("a@b")``
    (550 5.1.1 by default). A rule for ``bounces@x`` also covers its VERP forms
    ``bounces+<tag>@x``, as a relay's sender policy would.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._replies: dict[str, str] = {}

    def __setitem__(self, recipient: str, reply: str) -> None:
        with self._lock:
            self._replies[recipient.lower()] = _checked(reply)

    def __delitem__(self, recipient: str) -> None:
        with self._lock:
            del self._replies[recipient.lower()]

    def __call__(self, recipient: str, reply: str = "550 5.1.1 no such user") -> None:
        self[recipient] = reply

    def get(self, recipient: str) -> str | None:
        address = recipient.lower()
        local, at, domain = address.rpartition("@")
        base = f"{local.partition('+')[0]}{at}{domain}"
        with self._lock:
            return self._replies.get(address) or self._replies.get(base)

    def clear(self) -> None:
        with self._lock:
            self._replies.clear()


class SinkHandler:
    """Stores what arrives; answers with injected faults when asked to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.reject = Rejections(threading.Lock())
        self.tempfail_left = 0
        self.tempfail_reply = "451 4.3.0 try again later"
        self.tempfail_at = "rcpt"
        self.drop_after_data_left = 0
        self.connections = 0
        self.recipients_seen: list[str] = []  # every RCPT TO answered, in order (lower-cased)
        self.pipelining = True
        self.smtputf8 = True
        self.logins: list[tuple[str, str]] = []
        self.credentials: dict[str, str] = {}

    def _take_tempfail(self, stage: str) -> str | None:
        with self.lock:
            if self.tempfail_left > 0 and self.tempfail_at == stage:
                self.tempfail_left -= 1
                return self.tempfail_reply
        return None

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if not self.smtputf8:
            responses = [r for r in responses if r != "250-SMTPUTF8"]
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        reply = self.reject.get(address)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self.lock:
            self.recipients_seen.append(address.lower())
        reply = self.reject.get(address) or self._take_tempfail("rcpt")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self._take_tempfail("data")
        if reply is not None:
            return reply
        with self.lock:
            drop = self.drop_after_data_left > 0
            if drop:
                self.drop_after_data_left -= 1
            # A dropped message is stored too, as a server that crashed after queueing it
            # would have delivered it: the client cannot know either way.
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    [r.lower() for r in envelope.rcpt_tos],
                    _raw(envelope),
                    connection=getattr(server, "connection_number", 0),
                    dropped=drop,
                    exact_recipients=tuple(envelope.rcpt_tos),
                    mail_options=tuple(envelope.mail_options),
                )
            )
        if drop:
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            return "250 never sent"
        return "250 OK queued"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        with self.lock:
            self.logins.append((login, password))
            ok = self.credentials.get(login) == password
        return AuthResult(success=ok, handled=False)  # aiosmtpd then answers 535


def _raw(envelope: Envelope) -> bytes:
    raw = envelope.original_content or envelope.content or b""
    return raw if isinstance(raw, bytes) else raw.encode()


class _CountingSMTP(SMTP):
    connection_number = 0

    def connection_made(self, transport: Any) -> None:
        if self._original_transport is None:  # not the TLS upgrade of a counted connection
            handler = self.event_handler
            with handler.lock:
                handler.connections += 1
                self.connection_number = handler.connections
        super().connection_made(transport)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


class SmtpSink:
    """``tls``: a server certificate and key (see :func:`self_signed_certificate`); with
    ``implicit_tls`` the server speaks TLS from the first byte (``smtps://``), otherwise it
    offers STARTTLS. ``credentials``: user → password that AUTH accepts (TLS needed)."""

    def __init__(
        self,
        *,
        tls: tuple[Path, Path] | None = None,
        implicit_tls: bool = False,
        credentials: dict[str, str] | None = None,
    ) -> None:
        self.handler = SinkHandler()
        self.handler.credentials = dict(credentials or {})
        self.reject = self.handler.reject
        self.host = "127.0.0.1"
        self.port = _free_port()
        self._tls: ssl.SSLContext | None = None
        if tls is not None:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(*tls)
        self.implicit_tls = implicit_tls and tls is not None
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"

    def _controller_for(self) -> Controller:
        extra: dict[str, Any] = {}
        if self._tls is not None and not self.implicit_tls:
            extra["tls_context"] = self._tls
        if self.handler.credentials:
            extra["authenticator"] = self.handler.authenticate
            # aiosmtpd only sees STARTTLS as TLS; an smtps:// connection is TLS already.
            extra["auth_require_tls"] = not self.implicit_tls
        return _Controller(
            self.handler,
            hostname=self.host,
            port=self.port,
            ssl_context=self._tls if self.implicit_tls else None,
            server_hostname="sink.test",
            data_size_limit=10 * 1024 * 1024,
            **extra,
        )

    def start(self) -> SmtpSink:
        controller = self._controller_for()
        with self.handler.lock:
            before = self.handler.connections
        controller.start()
        with self.handler.lock:  # the controller's own readiness probe is not a client
            self.handler.connections = before
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def refuse_connections(self) -> bool:
        """True: nothing listens on the port (clients get "connection refused"), and open
        connections are cut, as when the server is down. False: listening again."""
        return self._controller is None

    @refuse_connections.setter
    def refuse_connections(self, refuse: bool) -> None:
        if refuse:
            self.stop()
        elif self._controller is None:
            self.start()

    # --- what arrived -------------------------------------------------------------------------

    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def messages(self) -> list[SinkMessage]:
        """Every message taken so far, parsed, with ``envelope_from`` and ``envelope_to``."""
        return [r.message for r in self.received()]

    def envelopes(self) -> list[tuple[list[str], EmailMessage]]:
        return [(r.recipients, r.message) for r in self.received()]

    def recipients_seen(self) -> list[str]:
        """Every RCPT TO the server answered so far, delivered or not (lower-cased)."""
        with self.handler.lock:
            return list(self.handler.recipients_seen)

    def count_for(self, recipient: str) -> int:
        return sum(r.recipients.count(recipient.lower()) for r in self.received())

    @property
    def connections(self) -> int:
        """Client connections accepted since the sink started."""
        with self.handler.lock:
            return self.handler.connections

    @property
    def logins(self) -> list[tuple[str, str]]:
        with self.handler.lock:
            return list(self.handler.logins)

    def clear(self) -> None:
        with self.handler.lock:
            self.handler.received.clear()

    # --- faults -------------------------------------------------------------------------------

    def tempfail_next(
        self,
        count: int,
        code: str = "451 4.3.0 try again later",
        *,
        at: Literal["rcpt", "data"] = "rcpt",
    ) -> None:
        """Answer ``code`` to the next ``count`` recipients (``at="rcpt"``) or messages
        after their body (``at="data"``); replaces any tempfail still pending."""
        if at not in ("rcpt", "data"):
            raise ValueError(f"at must be 'rcpt' or 'data', not {at!r}")
        with self.handler.lock:
            self.handler.tempfail_left = count
            self.handler.tempfail_reply = _checked(code)
            self.handler.tempfail_at = at

    def drop_connection_after_data(self, count: int) -> None:
        """Cut the connection after the body of each of the next ``count`` messages, with no
        reply. The message is stored (``dropped=True``), as a crashed server may have kept it."""
        with self.handler.lock:
            self.handler.drop_after_data_left = count

    @property
    def pipelining(self) -> bool:
        return self.handler.pipelining

    @pipelining.setter
    def pipelining(self, offered: bool) -> None:
        """Whether EHLO offers PIPELINING (RFC 2920) to connections opened from now on."""
        self.handler.pipelining = offered

    @property
    def smtputf8(self) -> bool:
        return self.handler.smtputf8

    @smtputf8.setter
    def smtputf8(self, offered: bool) -> None:
        """Whether EHLO offers SMTPUTF8 (RFC 6531) to connections opened from now on."""
        self.handler.smtputf8 = offered

    # --- waiting ------------------------------------------------------------------------------

    def wait_for_count(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until at least ``count`` messages have arrived; returns them."""
        self.wait_until(lambda got: len(got) >= count, timeout, what=f"{count} messages")
        return self.received()

    def wait_until(
        self,
        predicate: Callable[[list[Received]], bool],
        timeout: float = 30.0,
        *,
        what: str = "condition",
    ) -> None:
        """Poll ``predicate(received)`` until true; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not predicate(self.received()):
            if time.monotonic() > deadline:
                got = len(self.received())
                raise TimeoutError(f"SMTP sink: {what} not reached in {timeout:g}s ({got} got)")
            time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the ``openssl`` command; the
    certificate doubles as the CA file a client trusts. Without openssl the test is skipped
    on a developer's machine and FAILS under CI=true, so a green CI means TLS was tested."""
    openssl = shutil.which("openssl")
    if openssl is None:
        message = "the openssl command is needed to make a test certificate"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the TLS tests must not be skipped)")
        pytest.skip(message)
    cert, key = folder / "sink-cert.pem", folder / "sink-key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    try:
        yield sink
    finally:
        sink.stop()
