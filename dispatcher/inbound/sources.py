"""Where inbound messages are read from: files and maildirs given by hand, a local maildir
and an IMAP mailbox read on beat's schedule. Each message is applied in its own transaction."""

from __future__ import annotations

import logging
import mailbox
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.inbound.apply import Processed, process_message
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


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, done: Processed) -> None:
        key = "duplicate" if done.duplicate else done.outcome
        self.counts[key] = self.counts.get(key, 0) + 1


def poll_maildir(
    sessions: sessionmaker[Session], settings: Settings, signer: TokenSigner, root: Path
) -> Tally:
    """Apply every message in ``root``'s new/, then move it to cur/ marked seen (``:2,S``).

    A message is moved only after its transaction committed; a crash in between leaves it
    to be read again, which its unique key turns into a duplicate.
    """
    tally = Tally()
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for path in sorted((root / "new").iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        with path.open("rb") as handle:
            raw = handle.read(settings.inbound_max_bytes + 1)
        tally.add(apply_raw(sessions, settings, signer, raw, source="maildir"))
        path.rename(root / "cur" / (path.name.split(":")[0] + ":2,S"))
    return tally


def poll_imap(
    sessions: sessionmaker[Session], settings: Settings, signer: TokenSigner, url: str
) -> Tally:
    """Apply every unseen message of an IMAP mailbox (``imaps://user:password@host/box``,
    TLS required), then flag it seen; same crash rule as :func:`poll_maildir`."""
    from urllib.parse import unquote, urlsplit

    from imapclient import IMAPClient

    parts = urlsplit(url)
    if parts.scheme != "imaps" or not parts.hostname:
        raise InboundError("inbound_imap_url must be imaps://user:password@host[:port]/mailbox")
    tally = Tally()
    with IMAPClient(parts.hostname, port=parts.port or 993, ssl=True, timeout=60) as client:
        client.login(unquote(parts.username or ""), unquote(parts.password or ""))
        client.select_folder(unquote(parts.path.lstrip("/")) or "INBOX")
        for uid in client.search(["UNSEEN"])[:500]:
            fetched = client.fetch([uid], ["RFC822.SIZE"])
            if int(fetched[uid][b"RFC822.SIZE"]) > settings.inbound_max_bytes:
                raw = client.fetch([uid], ["BODY.PEEK[HEADER]"])[uid][b"BODY[HEADER]"]
            else:
                raw = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
            tally.add(apply_raw(sessions, settings, signer, bytes(raw), source="imap"))
            client.add_flags([uid], [b"\\Seen"])
    return tally
