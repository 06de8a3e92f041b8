"""E-mail as a service with one interface: maildir outbox or SMTP, chosen by URL scheme.

Errors say what the caller may do next: :class:`TransientSendError` (not delivered, try
later), :class:`PermanentSendError` (refused for good), :class:`UncertainSendError` (the
message may or may not have been taken: never resend it automatically).
"""

from __future__ import annotations

import hashlib
import os
import smtplib
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit


class SendError(Exception):
    """A message could not be handed over."""


class TransientSendError(SendError):
    """Not delivered; safe to try again later. ``connection_lost``: the rest of the batch
    cannot go over this connection either."""

    def __init__(self, message: str, *, connection_lost: bool = True) -> None:
        super().__init__(message)
        self.connection_lost = connection_lost


class PermanentSendError(SendError):
    """The server refused this message or recipient for good (SMTP 5xx).

    ``recipient_refused``: the refusal named the mailbox (at RCPT TO), a hard bounce; a
    refusal of the message itself (at DATA) says nothing about the address.
    """

    def __init__(
        self, message: str, *, code: int, recipient: str, recipient_refused: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.recipient = recipient
        self.recipient_refused = recipient_refused


class UncertainSendError(SendError):
    """The connection broke after the message was sent and before the server answered."""


class Transport(Protocol):
    def send(self, envelope_from: str, recipient: str, message: bytes) -> None: ...


class MaildirTransport:
    """Writes each message into a maildir ``new/`` folder, atomically (tmp, then rename).

    The file name is derived from the Message-ID, so writing the same message twice leaves
    one file. The envelope recipient is recorded in an ``X-Envelope-To`` header line.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            for sub in ("tmp", "new", "cur"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransientSendError(f"maildir {root} is not writable: {exc}") from None

    def send(self, envelope_from: str, recipient: str, message: bytes) -> None:
        headers = BytesHeaderParser().parsebytes(message)
        key = headers.get("Message-ID") or hashlib.sha256(message).hexdigest()
        name = hashlib.sha256(f"{key}\0{recipient}".encode()).hexdigest()[:32]
        final = self.root / "new" / f"{name}.eml"
        tmp = self.root / "tmp" / f"{name}.{os.getpid()}.{time.monotonic_ns()}"
        data = f"X-Envelope-From: <{envelope_from}>\r\nX-Envelope-To: <{recipient}>\r\n"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data.encode("ascii", "backslashreplace"))
                handle.write(message)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise TransientSendError(f"writing to maildir {self.root} failed: {exc}") from None


class SMTPTransport:
    """One SMTP connection for a batch: opened on first send, reused, closed with QUIT."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        implicit_tls: bool,
        starttls: bool,
        username: str | None,
        password: str | None,
        timeout: float,
    ) -> None:
        self.host, self.port = host, port
        self.implicit_tls, self.starttls = implicit_tls, starttls
        self.username, self.password = username, password
        self.timeout = timeout
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        if self._conn is not None:
            return self._conn
        try:
            conn: smtplib.SMTP
            if self.implicit_tls:
                conn = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            conn.ehlo()
            if self.starttls:
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if self.username:
                conn.login(self.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise TransientSendError(f"SMTP login refused ({exc.smtp_code})") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientSendError(
                f"cannot connect to SMTP {self.host}:{self.port}: {exc}"
            ) from None
        self._conn = conn
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def send(self, envelope_from: str, recipient: str, message: bytes) -> None:
        conn = self._connect()
        phase = "envelope"
        try:
            code, reply = conn.mail(envelope_from)
            if code != 250:
                self._refused(conn, code, reply, recipient, stage="MAIL FROM")
            code, reply = conn.rcpt(recipient)
            if code not in (250, 251):
                self._refused(conn, code, reply, recipient, stage="RCPT TO")
            phase = "data"
            code, reply = conn.data(message)
            if code != 250:
                self._refused(conn, code, reply, recipient, stage="DATA")
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            if phase == "data":
                raise UncertainSendError(f"connection lost during DATA: {exc}") from None
            raise TransientSendError(f"connection lost: {exc}") from None
        except smtplib.SMTPDataError as exc:
            self._reset(conn)
            self._classify(exc.smtp_code, exc.smtp_error, recipient, "DATA")

    def _refused(
        self, conn: smtplib.SMTP, code: int, reply: bytes, recipient: str, stage: str
    ) -> None:
        self._reset(conn)
        self._classify(code, reply, recipient, stage)

    def _classify(self, code: int, reply: bytes | str, recipient: str, stage: str) -> None:
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        message = f"{stage} answered {code} {text}".strip()
        if code == 421:
            self._drop()
            raise TransientSendError(message, connection_lost=True)
        if 400 <= code < 500:
            raise TransientSendError(message, connection_lost=False)
        raise PermanentSendError(
            message, code=code, recipient=recipient, recipient_refused=stage == "RCPT TO"
        )

    def _reset(self, conn: smtplib.SMTP) -> None:
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                self._drop()


def _smtp_from_url(mail_url: str, timeout: float) -> SMTPTransport:
    parts = urlsplit(mail_url)
    options = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
    implicit = parts.scheme == "smtps"
    if not parts.hostname:
        raise ValueError(f"DISPATCHER_MAIL_URL {parts.scheme}://… names no host")
    return SMTPTransport(
        parts.hostname,
        parts.port or (465 if implicit else 25),
        implicit_tls=implicit,
        starttls=options.get("starttls", "false") in ("1", "true", "yes"),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout=float(options.get("timeout", timeout)),
    )


@contextmanager
def open_transport(mail_url: str, *, timeout: float = 30.0) -> Iterator[Transport]:
    """The transport ``mail_url`` names, for one batch (the SMTP connection is closed after)."""
    scheme = mail_url.split(":", 1)[0].lower()
    if scheme == "maildir":
        path = mail_url.removeprefix("maildir://")
        if not path.startswith("/"):
            raise ValueError(
                "DISPATCHER_MAIL_URL maildir:// needs an absolute path (maildir:///var/outbox)"
            )
        yield MaildirTransport(Path(path))
        return
    if scheme in ("smtp", "smtps"):
        transport = _smtp_from_url(mail_url, timeout)
        try:
            yield transport
        finally:
            transport.close()
        return
    raise ValueError(
        f"DISPATCHER_MAIL_URL has unknown scheme {scheme!r}: use maildir://, smtp:// or smtps://"
    )
