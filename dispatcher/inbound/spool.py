"""A local, durable spool for unsubscribes accepted while the database is away.

An RFC 8058 one-click POST is sent once; a mailto unsubscribe has been taken off the MTA's
queue once we answer 250. When the database cannot be reached, the request is written here
(fsync'd file, then fsync'd directory, then renamed into ``new/``) before we answer, and
:func:`drain` applies it when the database is back, on the host that wrote it. Applying is
idempotent (an unsubscribe twice changes nothing more), so a crash between the commit and the
file's removal only applies it again.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

log = logging.getLogger(__name__)

# What "the database cannot be reached" looks like through SQLAlchemy.
DATABASE_AWAY = (OperationalError, InterfaceError)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(spool: Path, kind: str, payload: dict[str, Any], body: bytes = b"") -> Path:
    """Store one request durably; returns its path. Raises OSError when it cannot."""
    for sub in ("tmp", "new", "work"):
        (spool / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{time.time_ns()}.{os.getpid()}.{secrets.token_hex(4)}.{kind}"
    head = json.dumps({"kind": kind, **payload}).encode() + b"\n"
    tmp = spool / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, head + body)
        os.fsync(fd)
    finally:
        os.close(fd)
    final = spool / "new" / name
    os.rename(tmp, final)
    _fsync_dir(spool / "new")
    return final


def pending(spool: Path) -> int:
    return sum(
        len(list((spool / sub).iterdir())) for sub in ("new", "work") if (spool / sub).is_dir()
    )


Applier = Callable[[dict[str, Any], bytes], None]


def drain(spool: Path, apply: Applier) -> int:
    """Apply every spooled request in order; stop at the first database error (the rest
    wait for the next call). Returns how many were applied.

    An entry that cannot be read, or whose applying fails for any other reason, is set
    aside (``<spool>/<name>.bad``, kept for a person to look at) and draining goes on: one
    such entry must not hold back every unsubscribe spooled after it.
    """
    if not (spool / "new").is_dir():
        return 0
    work = spool / "work"
    work.mkdir(exist_ok=True, mode=0o700)
    # Files a crashed drainer had claimed go first.
    claimed = sorted(work.iterdir())
    for path in sorted((spool / "new").iterdir()):
        target = work / path.name
        try:
            os.rename(path, target)  # atomic claim: two drainers never take the same file
        except FileNotFoundError:
            continue
        claimed.append(target)
    done = 0
    for path in claimed:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        head, _, body = data.partition(b"\n")
        try:
            payload = json.loads(head)
        except ValueError:
            _set_aside(spool, path, "unreadable")
            continue
        try:
            apply(payload, body)
        except DATABASE_AWAY:
            log.warning("spool: database still away or busy; %d entries wait", len(claimed) - done)
            return done
        except Exception as exc:  # this entry's own fault: the others must still be applied
            _set_aside(spool, path, f"failed: {type(exc).__name__}")
            continue
        path.unlink(missing_ok=True)
        done += 1
    return done


def _set_aside(spool: Path, path: Path, why: str) -> None:
    """Move an entry out of the queue, kept whole for a person (the log names the file and
    why, never what it holds)."""
    log.error("spool: entry %s kept aside as %s.bad (%s)", path.name, path.name, why)
    path.rename(spool / (path.name + ".bad"))


class Drainer:
    """A daemon thread that drains the spool every ``every`` seconds while it holds entries
    (the web app and the receiver each run one, so no beat is needed on their hosts)."""

    def __init__(self, spool: Path, apply: Applier, every: float = 5.0) -> None:
        self.spool = spool
        self.apply = apply
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spool-drainer", daemon=True)

    def start(self) -> Drainer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if pending(self.spool):
                    drain(self.spool, self.apply)
            except Exception:  # keep draining later; the entries stay on disk
                log.exception("spool: drain failed")
