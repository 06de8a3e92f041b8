"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd), with faults on demand."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from workers.process import wait_until


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipients: list[str]
    data: bytes
    at: float = field(default_factory=time.time)

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class SinkHandler:
    """Stores what arrives; answers with injected faults when asked to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.reject: dict[str, str] = {}  # recipient -> reply at RCPT, e.g. "550 5.1.1 no"
        self.tempfail_left = 0
        self.tempfail_reply = "451 4.3.0 try again later"
        self.drop_after_data_left = 0
        self.connections = 0

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self.lock:
            reply = self.reject.get(address.lower())
            if reply is None and self.tempfail_left > 0:
                self.tempfail_left -= 1
                reply = self.tempfail_reply
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            drop = self.drop_after_data_left > 0
            if drop:
                self.drop_after_data_left -= 1
            else:
                self.received.append(
                    Received(
                        str(envelope.mail_from),
                        [r.lower() for r in envelope.rcpt_tos],
                        bytes(envelope.original_content or envelope.content or b""),
                    )
                )
        if drop:
            # The body arrived but the client never hears back: it cannot know the outcome.
            # Store it as delivered, as a real server that crashed after queueing would.
            with self.lock:
                self.received.append(
                    Received(
                        str(envelope.mail_from),
                        [r.lower() for r in envelope.rcpt_tos],
                        bytes(envelope.original_content or envelope.content or b""),
                    )
                )
            assert server.transport is not None
            server.transport.abort()
            return "250 never sent"
        return "250 OK queued"


class _CountingSMTP(SMTP):
    def connection_made(self, transport: Any) -> None:
        handler = self.event_handler
        with handler.lock:
            handler.connections += 1
        super().connection_made(transport)


class SmtpSink:
    def __init__(self) -> None:
        self.handler = SinkHandler()
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.controller = Controller(self.handler, hostname=self.host, port=self.port)
        self.controller.factory = lambda: _CountingSMTP(  # type: ignore[method-assign]
            self.handler, data_size_limit=10 * 1024 * 1024, hostname="sink.test"
        )

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def envelopes(self) -> list[tuple[list[str], EmailMessage]]:
        return [(r.recipients, r.message) for r in self.received()]

    def count_for(self, recipient: str) -> int:
        return sum(r.recipients.count(recipient.lower()) for r in self.received())

    def clear(self) -> None:
        with self.handler.lock:
            self.handler.received.clear()

    def reject(self, recipient: str, reply: str = "550 5.1.1 no such user") -> None:
        with self.handler.lock:
            self.handler.reject[recipient.lower()] = reply

    def tempfail_next(self, count: int, reply: str = "451 4.3.0 try again later") -> None:
        with self.handler.lock:
            self.handler.tempfail_left = count
            self.handler.tempfail_reply = reply

    def drop_connection_after_data(self, count: int) -> None:
        with self.handler.lock:
            self.handler.drop_after_data_left = count

    @property
    def connections(self) -> int:
        with self.handler.lock:
            return self.handler.connections

    def wait_for_count(self, count: int, timeout: float = 30.0) -> None:
        wait_until(
            lambda: len(self.received()) >= count,
            timeout,
            what=f"{count} messages at the SMTP sink",
        )

    def wait_until(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 30.0
    ) -> None:
        wait_until(lambda: predicate(self.received()), timeout, what="SMTP sink condition")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    try:
        yield sink
    finally:
        sink.stop()
