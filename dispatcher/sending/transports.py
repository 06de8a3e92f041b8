"""E-mail as a service with one interface: maildir outbox or SMTP, chosen by URL scheme.

Errors say what the caller may do next: :class:`TransientSendError` (not delivered, try
later), :class:`PermanentSendError` (refused for good), :class:`UncertainSendError` (the
message may or may not have been taken: never resend it automatically).

``DISPATCHER_MAIL_URL`` forms::

    maildir:///abs/path/outbox
    smtp://user:password@host:587?starttls=true&timeout=10&cafile=/etc/ssl/relay-ca.pem
    smtps://user:password@host:465          (TLS from the first byte)

User and password are percent-decoded. Credentials are sent only as the server asks (AUTH);
use ``starttls=true`` or ``smtps`` for anything but a relay on the same host.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from dispatcher.ops import metrics

SETTING = "DISPATCHER_MAIL_URL"

log = logging.getLogger(__name__)


class SendError(Exception):
    """A message could not be handed over."""


class TransientSendError(SendError):
    """Not delivered; safe to try again later. ``connection_lost``: the rest of the batch
    cannot go over this transport now either (connection broken, outbox unwritable)."""

    def __init__(self, message: str, *, connection_lost: bool = True) -> None:
        super().__init__(message)
        self.connection_lost = connection_lost


class RelayUnreachable(TransientSendError):
    """No SMTP conversation could be opened (refused, timed out, TLS failed)."""


class RelayLoginRefused(TransientSendError):
    """The relay refused the user and password of ``DISPATCHER_MAIL_URL``."""


class RelayUnsupported(TransientSendError):
    """The relay does not offer what ``DISPATCHER_MAIL_URL`` asks for (STARTTLS, AUTH)."""


class OutboxUnwritable(TransientSendError):
    """The maildir outbox cannot be written."""


class PermanentSendError(SendError):
    """The server refused this message or recipient for good (SMTP 5xx).

    ``recipient_refused``: the refusal named the mailbox (at RCPT TO), a hard bounce; a
    refusal of the sender or of the message itself says nothing about the address.
    ``sender_refused``: the relay refused our MAIL FROM — a configuration fault that every
    message of the batch would meet, not a verdict on this one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int,
        recipient: str,
        recipient_refused: bool = False,
        sender_refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.recipient = recipient
        self.recipient_refused = recipient_refused
        self.sender_refused = sender_refused


class NeedsSmtpUtf8(PermanentSendError):
    """The address has a non-ASCII local part and the relay does not offer SMTPUTF8
    (RFC 6531): it cannot be sent there as it is, and no other spelling is the same mailbox."""


class UncertainSendError(SendError):
    """The connection broke after the message was sent and before the server answered."""


class Transport(Protocol):
    def send(
        self,
        envelope_from: str,
        recipient: str,
        message: bytes,
        *,
        then: tuple[str, str, bytes] | None = None,
        while_waiting: Callable[[], None] | None = None,
    ) -> None: ...


_ENVELOPE_BREAKERS = re.compile("[\r\n\0<> \t]")


def _check_envelope(envelope_from: str, recipient: str) -> None:
    """A line break or bracket in an envelope address would inject commands or headers."""
    for role, address in (("sender", envelope_from), ("recipient", recipient)):
        if not address or _ENVELOPE_BREAKERS.search(address):
            raise PermanentSendError(
                f"not sent: the envelope {role} address is empty or holds a line break, "
                "space or angle bracket",
                code=501,
                recipient=recipient,
            )


# --- maildir ----------------------------------------------------------------------------------

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S[^\r\n]*)", re.IGNORECASE | re.MULTILINE)


class MaildirTransport:
    """Writes each message into a maildir's ``new/`` folder, atomically (tmp, then rename),
    so :class:`mailbox.Maildir` and any mail client can read the outbox.

    The file name is derived from the Message-ID and the recipient, so writing the same
    message twice leaves one file. ``X-Envelope-From`` and ``X-Envelope-To`` lines are put
    on top of the message, as local delivery agents do, so readers see who it was for.
    The folders are created on the first send, mode 0700, and every file mode 0600.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ready = False

    def _prepare(self) -> None:
        try:
            # Messages hold addresses, names and signed links: readable by their owner only.
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for sub in ("tmp", "new", "cur"):
                (self.root / sub).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise OutboxUnwritable(f"maildir {self.root} is not writable: {exc}") from None
        self._ready = True

    def send(
        self,
        envelope_from: str,
        recipient: str,
        message: bytes,
        *,
        then: tuple[str, str, bytes] | None = None,  # a file needs no announcing
        while_waiting: Callable[[], None] | None = None,  # nor waits for a reply
    ) -> None:
        _check_envelope(envelope_from, recipient)
        if not self._ready:
            self._prepare()
        ends = [i for i in (message.find(b"\r\n\r\n"), message.find(b"\n\n")) if i >= 0]
        head = message[: min(ends)] if ends else message
        found = _MESSAGE_ID.search(head)
        key = found.group(1).strip() if found else hashlib.sha256(message).digest()
        name = hashlib.sha256(key + b"\0" + recipient.encode()).hexdigest()[:32]
        final = self.root / "new" / f"{name}.eml"
        if final.exists():
            return  # the same message for the same recipient is already in the outbox
        eol = "\r\n" if b"\r\n" in head else "\n"
        envelope = f"X-Envelope-From: <{envelope_from}>{eol}X-Envelope-To: <{recipient}>{eol}"
        tmp = self.root / "tmp" / f"{name}.{os.getpid()}.{time.monotonic_ns()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(envelope.encode())
                handle.write(message)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutboxUnwritable(f"writing to maildir {self.root} failed: {exc}") from None


# --- SMTP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpOptions:
    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    cafile: str | None = None


class _BrokenBeforeBody(Exception):
    """The connection failed before the end of the message went out: nothing was taken."""


_BARE_LF = re.compile(rb"(?<!\r)\n")
_LOST = (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError)


def _data_payload(message: bytes) -> bytes:
    """CRLF line ends, dot-stuffed, with the terminating ``.`` line (RFC 5321 4.5.2)."""
    bare_lf = message.count(b"\n") != message.count(b"\r\n")  # two C scans beat a regex
    data = _BARE_LF.sub(b"\r\n", message) if bare_lf else message
    # Every line now ends in CRLF, so a line's leading dot follows CRLF or starts the data:
    # bytes.replace, a C scan, instead of a multi-line regex (a styled body has many such
    # lines, and this runs once per message).
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


@functools.cache
def _local_name() -> str:
    # smtplib would look this up on every connection; it can be slow where DNS is.
    return socket.getfqdn()


def _relay_reply(reply: bytes | str, password: str | None) -> str:
    """The relay's words, printable and short, with the password taken out should it echo it."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    text = " ".join(text.split())[:300]
    if password:
        text = text.replace(password, "***")
    return text


@dataclass
class _Announced:
    """A message whose MAIL, RCPT and DATA went out ahead of its body (RFC 2920 3.1 lets
    message content open a group: the previous message's end and this message's commands
    share one write). Kept only with all three replies read: a connection that broke
    before they came is dropped, and the announcement with it."""

    sender: str
    recipient: str
    message: bytes
    payload: bytes
    replies: list[tuple[int, bytes]]

    @property
    def data_open(self) -> bool:
        """The server took DATA and waits for a body: only dropping the connection ends
        that without a message (a lone "." would send an empty one)."""
        return len(self.replies) == 3 and self.replies[2][0] == 354


def _write(sock: socket.socket, data: bytes) -> int:
    """Write all of ``data``; on a failure, :class:`_PartlyWritten` says how many bytes the
    kernel had taken (what the server may have)."""
    view, done = memoryview(data), 0
    try:
        while done < len(data):
            done += sock.send(view[done:])
    except OSError as exc:
        raise _PartlyWritten(done, exc) from None
    return done


class _PartlyWritten(Exception):
    def __init__(self, written: int, cause: OSError) -> None:
        super().__init__(f"{cause} (after {written} bytes)")
        self.written = written


class SMTPTransport:
    """One SMTP connection for a batch: opened on the first send, reused, closed with QUIT.

    Commands are pipelined (RFC 2920) when the server offers it: MAIL, RCPT and DATA go in
    one write, so each message costs two round trips; a caller that names the next message
    (``send(..., then=...)``) gets that message's MAIL, RCPT and DATA written with this
    message's end, so a run of messages costs one round trip each. A connection that fails
    before a message's end went out is replaced once, transparently, when it had already
    carried a message (the server may have closed it for idling or for a per-connection
    limit).
    """

    def __init__(self, options: SmtpOptions) -> None:
        self.options = options
        self._conn: smtplib.SMTP | None = None
        self._fresh = True
        # The next message's envelope, written with the last message's end, and the server's
        # replies to it: the next send() for that message starts from them.
        self._announced: _Announced | None = None

    def _connection(self) -> smtplib.SMTP:
        if self._conn is not None:
            return self._conn
        o = self.options
        conn: smtplib.SMTP | None = None
        try:
            if o.implicit_tls:
                conn = smtplib.SMTP_SSL(
                    o.host, o.port, _local_name(), timeout=o.timeout, context=self._tls()
                )
            else:
                conn = smtplib.SMTP(o.host, o.port, _local_name(), timeout=o.timeout)
            conn.ehlo_or_helo_if_needed()
            if o.starttls:
                conn.starttls(context=self._tls())
                conn.ehlo()
            if o.username:
                conn.login(o.username, o.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            self._close_quietly(conn)
            reason = _relay_reply(exc.smtp_error, o.password)
            # Said once here, where it happens: the batch only goes back to the queue.
            log.error(
                "the mail relay %s:%s refused the login as %r: %s %s",
                o.host,
                o.port,
                o.username,
                exc.smtp_code,
                reason,
            )
            raise RelayLoginRefused(
                f"SMTP {o.host}:{o.port} refused the login ({exc.smtp_code} {reason}): "
                f"check the user and password in {SETTING}"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            self._close_quietly(conn)
            raise RelayUnsupported(
                f"SMTP {o.host}:{o.port} does not offer what {SETTING} asks for: {exc}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            self._close_quietly(conn)
            raise RelayUnreachable(f"cannot connect to SMTP {o.host}:{o.port}: {exc}") from None
        self._conn, self._fresh = conn, True
        return conn

    def check(self) -> None:
        """Connect, EHLO, STARTTLS and AUTH as configured, then QUIT: sends nothing.
        Raises the same errors as a batch would meet (``dispatcher doctor`` uses it)."""
        self._connection()
        self.close()

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.options.cafile)

    @staticmethod
    def _close_quietly(conn: smtplib.SMTP | None) -> None:
        if conn is not None:
            conn.close()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._announced = None
        self._close_quietly(conn)

    def send(
        self,
        envelope_from: str,
        recipient: str,
        message: bytes,
        *,
        then: tuple[str, str, bytes] | None = None,
        while_waiting: Callable[[], None] | None = None,
    ) -> None:
        """Hand ``message`` over (errors: see the module's docstring).

        ``while_waiting`` is called once the message has gone and before its reply is
        read, so the round trip overlaps the caller's work; it must not raise.

        ``then``: the envelope sender, recipient and message the caller sends next, whatever
        becomes of this one. With PIPELINING, its MAIL, RCPT and DATA go out in the same
        write as this message's end and their replies are read with this message's, so the
        next :meth:`send` of exactly that message needs one round trip. Those commands
        deliver nothing by themselves: if the caller sends anything else next, or closes,
        a transaction the server opened for them is ended by dropping the connection (a
        lone "." would be an empty message)."""
        _check_envelope(envelope_from, recipient)
        announced = self._take_announced(envelope_from, recipient, message)
        payload = announced.payload if announced is not None else _data_payload(message)
        for attempt in (1, 2):
            conn = self._connection()
            fresh = self._fresh
            try:
                self._transaction(
                    conn, envelope_from, recipient, payload, announced, then, while_waiting
                )
            except _BrokenBeforeBody as exc:
                self._drop()
                announced = None  # its replies were the old connection's
                if fresh or attempt == 2:
                    raise TransientSendError(str(exc)) from None
                continue
            finally:
                self._fresh = False
            return

    def _take_announced(self, sender: str, recipient: str, message: bytes) -> _Announced | None:
        """The announced transaction if it is this message's; otherwise it is ended."""
        announced, self._announced = self._announced, None
        if announced is None:
            return None
        if (announced.sender, announced.recipient, announced.message) == (
            sender,
            recipient,
            message,
        ):
            return announced
        if announced.data_open or self._conn is None:
            self._drop()
        else:  # refused before DATA: the transaction only needs resetting
            self._abort(self._conn, data_open=False)
        return None

    @staticmethod
    def _commands(conn: smtplib.SMTP, sender: str, recipient: str, payload: bytes) -> bytes:
        extensions = ""
        if not (sender.isascii() and recipient.isascii()):
            if not conn.has_extn("smtputf8"):
                raise NeedsSmtpUtf8(
                    "not sent: the address has non-ASCII characters, which need SMTPUTF8, "
                    "and the mail relay does not offer it",
                    code=553,
                    recipient=recipient,
                )
            extensions += " SMTPUTF8"
        if not payload.isascii() and conn.has_extn("8bitmime"):
            extensions += " BODY=8BITMIME"
        return f"MAIL FROM:<{sender}>{extensions}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode()

    def _ahead(
        self, conn: smtplib.SMTP, then: tuple[str, str, bytes] | None
    ) -> tuple[_Announced, bytes] | None:
        """The next message's transaction and commands, to write after this message's end."""
        if then is None or not conn.has_extn("pipelining"):
            return None
        sender, recipient, message = then
        try:
            _check_envelope(sender, recipient)
            payload = _data_payload(message)
            commands = self._commands(conn, sender, recipient, payload)
        except PermanentSendError:
            return None  # its own send() refuses it and says why
        return _Announced(sender, recipient, message, payload, []), commands

    def _transaction(
        self,
        conn: smtplib.SMTP,
        sender: str,
        recipient: str,
        payload: bytes,
        announced: _Announced | None,
        then: tuple[str, str, bytes] | None,
        while_waiting: Callable[[], None] | None,
    ) -> None:
        expected = ((250,), (250, 251), (354,))
        replies: list[tuple[int, bytes]] = []
        if announced is not None:
            replies = announced.replies  # its commands went out with the last message's end
        else:
            commands = self._commands(conn, sender, recipient, payload)
            try:
                if conn.has_extn("pipelining"):
                    conn.send(commands)
                    replies = [conn.getreply() for _ in expected]
                else:
                    lines = commands.splitlines(keepends=True)
                    for command, ok in zip(lines, expected, strict=True):
                        conn.send(command)
                        replies.append(conn.getreply())
                        if replies[-1][0] not in ok:
                            break
            except _LOST as exc:
                raise _BrokenBeforeBody(f"SMTP connection lost before the message: {exc}") from None
        stages = ("MAIL FROM", "RCPT TO", "DATA")
        for stage, (code, text), ok in zip(stages, replies, expected, strict=False):
            if code not in ok:
                metrics.smtp_reply(code)
                self._abort(conn, data_open=replies[-1][0] == 354 and len(replies) == 3)
                self._refused(stage, code, text, recipient)
        ahead = self._ahead(conn, then)
        if conn.sock is None:
            raise _BrokenBeforeBody("SMTP connection closed before the message")
        try:
            _write(conn.sock, payload + ahead[1] if ahead is not None else payload)
        except _PartlyWritten as exc:
            if exc.written < len(payload):
                # The final "." never went out, so the server cannot have taken the message.
                raise _BrokenBeforeBody(f"SMTP connection lost while sending: {exc}") from None
            self._drop()
            raise UncertainSendError(
                f"SMTP connection lost after the message was sent, before the reply: {exc}"
            ) from None
        if while_waiting is not None:
            while_waiting()
        try:
            code, text = conn.getreply()
        except _LOST as exc:
            self._drop()
            raise UncertainSendError(
                f"SMTP connection lost after the message was sent, before the reply: {exc}"
            ) from None
        if ahead is not None and 200 <= code < 600 and code != 421:
            # The server goes on to the next message's commands: read their replies now, so
            # the dialogue stays in step whatever this message's fate.
            try:
                ahead[0].replies = [conn.getreply() for _ in expected]
                self._announced = ahead[0]
            except _LOST:
                self._drop()  # nothing of the next message was taken; its send reconnects
        metrics.smtp_reply(code)
        if 200 <= code < 300:
            return
        if code < 400 or code >= 600:
            self._drop()
            raise UncertainSendError(f"SMTP answered the message with {code} {text!r}")
        self._refused("end of DATA", code, text, recipient)

    def _abort(self, conn: smtplib.SMTP, *, data_open: bool) -> None:
        """End a refused transaction so the connection can carry the next message."""
        try:
            if data_open:  # a server that opened DATA with no recipient: send it nothing
                conn.send(b".\r\n")
                conn.getreply()
            code, _ = conn.rset()
            if code != 250:
                self._drop()
        except _LOST:
            self._drop()

    def _refused(self, stage: str, code: int, reply: bytes, recipient: str) -> NoReturn:
        text = reply.decode("utf-8", errors="replace").replace("\n", " ")
        message = f"{stage} answered {code} {text}".strip()
        if code == 421 or not 400 <= code < 600:
            # The server is closing the connection, or the dialogue is out of step.
            self._drop()
            raise _BrokenBeforeBody(message)
        if code < 500:
            raise TransientSendError(message, connection_lost=False)
        raise PermanentSendError(
            message,
            code=code,
            recipient=recipient,
            recipient_refused=stage == "RCPT TO",
            sender_refused=stage == "MAIL FROM",
        )

    def close(self) -> None:
        if self._announced is not None and self._announced.data_open:
            self._drop()  # a QUIT now would be read as the announced message's text
            return
        conn, self._conn = self._conn, None
        self._announced = None
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def idle(self) -> bool:
        """Connected, with no transaction announced: fit to be kept for another batch."""
        return self._conn is not None and self._announced is None

    def reset(self) -> bool:
        """RSET on a kept connection: True when it answers 250 and can carry the next
        transaction; otherwise it is dropped (the next send opens a fresh one)."""
        if self._conn is None or self._announced is not None:
            self._drop()
            return False
        try:
            code, _ = self._conn.rset()
        except _LOST:
            code = 0
        if code != 250:
            self._drop()
            return False
        return True

    def forget(self) -> None:
        """Close the socket without QUIT: for a connection inherited across a fork, which
        the parent may still use."""
        self._drop()


# --- choosing by URL --------------------------------------------------------------------------

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_SMTP_OPTIONS = ("starttls", "timeout", "cafile")


def _flag(name: str, value: str) -> bool:
    if value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError(f"{SETTING}: {name}={value!r} is not true or false")


def parse_mail_url(mail_url: str, *, timeout: float = 30.0) -> Path | SmtpOptions:
    """The outbox folder or the SMTP options ``mail_url`` names; :class:`ValueError`
    naming ``DISPATCHER_MAIL_URL`` when it cannot work. Call it to check settings early."""
    scheme = mail_url.split(":", 1)[0].lower() if ":" in mail_url else ""
    if scheme == "maildir":
        path = mail_url[len("maildir://") :]
        if not mail_url.lower().startswith("maildir://") or not path.startswith("/"):
            raise ValueError(f"{SETTING} maildir:// needs an absolute path (maildir:///var/outbox)")
        return Path(path)
    if scheme not in ("smtp", "smtps"):
        raise ValueError(
            f"{SETTING} has unknown scheme {scheme!r}: use maildir://, smtp:// or smtps://"
        )
    parts = urlsplit(mail_url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{SETTING}: bad port: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"{SETTING} {scheme}://… names no host")
    if parts.path not in ("", "/"):
        raise ValueError(f"{SETTING} {scheme}:// takes no path (got {parts.path!r})")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - set(_SMTP_OPTIONS))
    if unknown:
        raise ValueError(
            f"{SETTING}: unknown option {', '.join(unknown)} (known: {', '.join(_SMTP_OPTIONS)})"
        )
    implicit = scheme == "smtps"
    starttls = _flag("starttls", options.get("starttls", "false"))
    if implicit and starttls:
        raise ValueError(f"{SETTING}: smtps:// is TLS already; starttls=true is for smtp://")
    try:
        seconds = float(options.get("timeout", timeout))
    except ValueError:
        raise ValueError(f"{SETTING}: timeout={options['timeout']!r} is not a number") from None
    if not seconds > 0:
        raise ValueError(f"{SETTING}: timeout must be more than 0 seconds")
    return SmtpOptions(
        host=parts.hostname,
        port=port or (465 if implicit else 25),
        implicit_tls=implicit,
        starttls=starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        timeout=seconds,
        cafile=options.get("cafile") or None,
    )


# --- connections kept across batches ----------------------------------------------------------

# Healthy SMTP connections between batches, per mail URL, for this process. A batch takes one
# out for itself alone (so a threads pool never shares one) and gives it back when it ended
# cleanly; anything else closes it.
_IDLE_MAX = 4
_IDLE_SECONDS = 60.0
_idle: dict[tuple[str, float], list[tuple[SMTPTransport, float]]] = {}
_idle_lock = threading.Lock()


def _checkout(key: tuple[str, float]) -> SMTPTransport | None:
    now = time.monotonic()
    while True:
        with _idle_lock:
            kept = _idle.get(key)
            if not kept:
                return None
            transport, since = kept.pop()
        if now - since > _IDLE_SECONDS:
            transport.close()  # relays drop idle connections; do not count on this one
        elif transport.reset():
            return transport


def _checkin(key: tuple[str, float], transport: SMTPTransport) -> None:
    with _idle_lock:
        kept = _idle.setdefault(key, [])
        if len(kept) < _IDLE_MAX:
            kept.append((transport, time.monotonic()))
            return
    transport.close()


def close_idle_transports() -> None:
    """QUIT every connection kept for reuse (worker shutdown)."""
    with _idle_lock:
        kept = [t for entries in _idle.values() for t, _ in entries]
        _idle.clear()
    for transport in kept:
        transport.close()


def forget_idle_transports() -> None:
    """Drop the kept connections without a word on them (a forked child: they are the
    parent's)."""
    with _idle_lock:
        kept = [t for entries in _idle.values() for t, _ in entries]
        _idle.clear()
    for transport in kept:
        transport.forget()


@contextmanager
def reused_transport(mail_url: str, *, timeout: float = 30.0) -> Iterator[Transport]:
    """Like :func:`open_transport`, but an SMTP connection is kept open after a batch that
    ended cleanly, for the next batch of this process to the same URL (checked with RSET
    when taken again, closed after a minute idle or at worker shutdown). A connection that
    failed, or a batch that raised, is closed instead."""
    target = parse_mail_url(mail_url, timeout=timeout)
    if isinstance(target, Path):
        yield MaildirTransport(target)
        return
    key = (mail_url, timeout)
    transport = _checkout(key) or SMTPTransport(target)
    clean = False
    try:
        yield transport
        clean = True
    finally:
        if clean and transport.idle:
            _checkin(key, transport)
        else:
            transport.close()


@contextmanager
def open_transport(mail_url: str, *, timeout: float = 30.0) -> Iterator[Transport]:
    """The transport ``mail_url`` names, for one batch (an SMTP connection is closed after).

    ``timeout`` (seconds, per network operation) applies unless the URL gives its own.
    """
    target = parse_mail_url(mail_url, timeout=timeout)
    if isinstance(target, Path):
        yield MaildirTransport(target)
        return
    transport = SMTPTransport(target)
    try:
        yield transport
    finally:
        transport.close()
