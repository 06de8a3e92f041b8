"""Where inbound messages are read from: files and maildirs given by hand, a local maildir
and an IMAP mailbox read on beat's schedule. Each message is applied in its own transaction."""

from __future__ import annotations

import logging
import mailbox
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.inbound.apply import Processed, process_message, record_failed
from dispatcher.inbound.spool import DATABASE_AWAY
from dispatcher.settings import Settings
from suppression.tokens import TokenSigner

log = logging.getLogger(__name__)


class InboundError(Exception):
    """A path or mailbox that cannot be read; the message names it."""


def read_paths(paths: list[Path], *, limit: int) -> Iterator[tuple[str, bytes]]:
    """(name, raw bytes) of each file, of each file in a folder, or of each message of a
    maildir (cur/ and new/), in order.

    A message larger than ``limit`` bytes is read only up to ``limit + 1`` bytes, so it is
    recorded (as too large) without being loaded whole.
    """
    for path in paths:
        if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
            box = mailbox.Maildir(path, factory=None, create=False)
            for key in sorted(box.iterkeys()):
                with box.get_file(key) as handle:
                    yield f"{path}/{key}", handle.read(limit + 1)
        elif path.is_file():
            with path.open("rb") as handle:
                yield str(path), handle.read(limit + 1)
        elif path.is_dir():  # a plain folder of message files
            for child in sorted(p for p in path.iterdir() if p.is_file()):
                with child.open("rb") as handle:
                    yield str(child), handle.read(limit + 1)
        else:
            raise InboundError(f"{path}: not a file, a folder or a maildir")


def apply_raw(
    sessions: sessionmaker[Session],
    settings: Settings,
    signer: TokenSigner,
    raw: bytes,
    *,
    source: str,
    envelope: tuple[str, ...] = (),
) -> Processed:
    """Process one message in its own transaction; a concurrent twin makes it a duplicate."""
    try:
        with session_scope(sessions) as session:
            return process_message(session, settings, signer, raw, source=source, envelope=envelope)
    except IntegrityError:
        # Another process recorded the same message between our insert and commit.
        with session_scope(sessions) as session:
            done = process_message(session, settings, signer, raw, source=source, envelope=envelope)
        return done


def apply_or_set_aside(
    sessions: sessionmaker[Session],
    settings: Settings,
    signer: TokenSigner,
    raw: bytes,
    *,
    source: str,
    name: str,
) -> Processed | None:
    """:func:`apply_raw` for a mailbox read in order: a message whose processing fails for
    any reason but the database being away is recorded as failed (when it can be) and
    ``None`` is returned, so the caller moves it on and it never blocks the messages behind
    it. With the database away the error propagates and the message waits for the next run.

    ``name`` (a file name, an IMAP UID) goes into the log line; no address does.
    """
    try:
        return apply_raw(sessions, settings, signer, raw, source=source)
    except DATABASE_AWAY:
        raise
    except Exception as exc:  # one unprocessable message must not stop the mailbox
        why = f"processing failed: {type(exc).__name__}"
    log.error("inbound %s: message %s set aside (%s)", source, name, why)
    _record_failure(sessions, settings, raw, source=source, name=name, why=why)
    return None


def _record_failure(
    sessions: sessionmaker[Session],
    settings: Settings,
    raw: bytes,
    *,
    source: str,
    name: str,
    why: str,
) -> None:
    """Record a failed message in its own transaction; if even that fails (but for the
    database being away), say so and go on: the message itself stays in the mailbox."""
    try:
        with session_scope(sessions) as session:
            record_failed(session, settings, raw, source=source, why=why)
    except DATABASE_AWAY:
        raise
    except Exception as exc:
        log.error(
            "inbound %s: message %s could not be recorded either (%s)",
            source,
            name,
            type(exc).__name__,
        )


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, done: Processed | None) -> None:
        """Count one message by its outcome (``failed``: set aside, see
        :func:`apply_or_set_aside`)."""
        key = "failed" if done is None else "duplicate" if done.duplicate else done.outcome
        self.counts[key] = self.counts.get(key, 0) + 1


def poll_maildir(
    sessions: sessionmaker[Session], settings: Settings, signer: TokenSigner, root: Path
) -> Tally:
    """Apply every message in ``root``'s new/, then move it to cur/ marked seen (``:2,S``).

    A message is moved only after its transaction committed; a crash in between leaves it
    to be read again, which its unique key turns into a duplicate. One whose processing
    failed (:func:`apply_or_set_aside`) goes to cur/ too, flagged and unseen (``:2,F``), so
    a person opening the mailbox sees it and new/ still holds only what is left to do.
    """
    tally = Tally()
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for path in sorted((root / "new").iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        with path.open("rb") as handle:
            raw = handle.read(settings.inbound_max_bytes + 1)
        done = apply_or_set_aside(sessions, settings, signer, raw, source="maildir", name=path.name)
        tally.add(done)
        flags = "S" if done is not None else "F"
        path.rename(root / "cur" / (path.name.split(":")[0] + ":2," + flags))
    return tally


def poll_imap(
    sessions: sessionmaker[Session],
    settings: Settings,
    signer: TokenSigner,
    url: str,
    *,
    done_folder: str | None = None,
) -> Tally:
    """Apply the messages of an IMAP mailbox (``imaps://user:password@host[:port]/box``, TLS
    with the certificate verified), moving each one, once applied, to ``done_folder``
    (default ``inbound_imap_done_folder``; created when missing).

    Everything still in the mailbox is unprocessed, so a person reading it (which marks
    messages seen) loses nothing, and the mailbox does not grow with what was done. A
    message is moved only after its transaction committed; a crash in between leaves it to
    be read again, which its unique key turns into a duplicate. A message whose processing
    failed (:func:`apply_or_set_aside`) is flagged (``\\Flagged``) and moved there too: the
    mailbox keeps holding only what is left to do, and a person sees it. A connection, TLS,
    login or folder problem raises :class:`InboundError` before anything is applied.
    """
    from imapclient import IMAPClient
    from imapclient.exceptions import IMAPClientError, LoginError

    parts = urlsplit(url)
    if parts.scheme != "imaps" or not parts.hostname:
        raise InboundError("inbound_imap_url must be imaps://user:password@host[:port]/mailbox")
    host = f"{parts.hostname}:{parts.port or 993}"
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    target = done_folder if done_folder is not None else settings.inbound_imap_done_folder
    if not target or target == folder:
        raise InboundError(
            "inbound_imap_done_folder must name a folder other than the one read "
            f"({folder!r}): applied messages are moved there"
        )
    tally = Tally()
    step = "connecting to"
    try:
        with IMAPClient(parts.hostname, port=parts.port or 993, ssl=True, timeout=60) as client:
            step = "logging in to"
            client.login(unquote(parts.username or ""), unquote(parts.password or ""))
            step = "opening the folders on"
            if not client.folder_exists(target):
                client.create_folder(target)
            client.select_folder(folder)
            step = "reading from"
            for uid in client.search(["UNDELETED"])[:500]:
                fetched = client.fetch([uid], ["RFC822.SIZE"])
                if uid not in fetched:
                    continue  # expunged by someone else meanwhile
                if int(fetched[uid][b"RFC822.SIZE"]) > settings.inbound_max_bytes:
                    raw = client.fetch([uid], ["BODY.PEEK[HEADER]"])[uid][b"BODY[HEADER]"]
                else:
                    raw = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
                done = apply_or_set_aside(
                    sessions, settings, signer, bytes(raw), source="imap", name=f"UID {uid}"
                )
                tally.add(done)
                if done is None:
                    client.add_flags([uid], [b"\\Flagged"], silent=True)
                _move(client, uid, target)
    except LoginError:
        raise InboundError(
            f"IMAP {host}: the user name or password in inbound_imap_url was refused"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise InboundError(
            f"IMAP {host}: TLS failed (certificate verify failed: {exc.verify_message}); "
            "nothing was read. A server certified by a private CA is trusted through "
            "SSL_CERT_FILE"
        ) from None
    except ssl.SSLError as exc:
        raise InboundError(
            f"IMAP {host}: TLS failed ({exc.reason or exc}: does this port speak TLS from the "
            "start, as imaps on 993 does?); nothing was read"
        ) from None
    except (IMAPClientError, OSError) as exc:
        raise InboundError(f"IMAP {host}: failed while {step} the server: {exc}") from None
    return tally


def _move(client: Any, uid: int, folder: str) -> None:
    """Move one message: MOVE (RFC 6851) where offered, else copy, delete, expunge."""
    if client.has_capability("MOVE"):
        client.move([uid], folder)
        return
    client.copy([uid], folder)
    client.add_flags([uid], [b"\\Deleted"], silent=True)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge([uid])
    else:
        client.expunge()
