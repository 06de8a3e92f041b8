"""Contacts uploads imported in the background, with progress the upload page polls.

The import is :func:`dispatcher.contacts.importer.import_contacts` (what the CLI calls), run
in a thread and fed its ``progress`` callback (bytes read). Its state is a small JSON file
under ``<home>/console-imports/`` (0600, removed after a day), written atomically, so any
console process on the machine (gunicorn workers) answers the poll. Only the staff member who
started an import (or an admin) reads it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.importer import ImportReport, import_contacts
from dispatcher.db import session_scope
from dispatcher.settings import Settings
from suppression.events import Hit, record_event
from suppression.tokens import TokenSigner

log = logging.getLogger(__name__)

KEEP_SECONDS = 24 * 3600
WRITE_EVERY = 0.25  # seconds between progress writes
MAX_ERRORS_SHOWN = 1000


def _folder(settings: Settings) -> Path:
    folder = Path(settings.home) / "console-imports"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def _write(path: Path, state: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".job-")
    with os.fdopen(fd, "w") as out:
        json.dump(state, out)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _rows_in(path: Path) -> int:
    """Lines after the header (a quoted field spanning lines counts more than once)."""
    with path.open("rb") as data:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: data.read(1 << 20), b""))
    return max(lines - 1, 0)


def _report(report: ImportReport) -> dict[str, Any]:
    return {
        "read": report.read,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "invalid": report.invalid,
        "errors": [asdict(e) for e in report.errors[:MAX_ERRORS_SHOWN]],
        "errors_more": max(len(report.errors) - MAX_ERRORS_SHOWN, 0),
        "refused": [asdict(e) for e in report.refused[:MAX_ERRORS_SHOWN]],
    }


def _forget_old(folder: Path) -> None:
    cutoff = time.time() - KEEP_SECONDS
    for path in folder.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        except OSError:
            pass


def start_import(
    settings: Settings,
    sessions: sessionmaker[Session],
    upload: Any,
    filename: str,
    *,
    staff_id: int,
    actor: str,
    hit: Hit,
) -> str:
    """Save the upload and import it in a thread; returns the job id the page polls."""
    folder = _folder(settings)
    _forget_old(folder)
    job = secrets.token_urlsafe(16)
    work = folder / f"{job}.d"
    work.mkdir(mode=0o700)
    path = work / "upload.csv"
    upload.save(path)
    state: dict[str, Any] = {
        "staff": staff_id,
        "file": filename[:100],
        "state": "running",
        "bytes_done": 0,
        "bytes_total": path.stat().st_size,
        "rows_in_file": _rows_in(path),
        "report": None,
        "error": None,
    }
    status = folder / f"{job}.json"
    _write(status, state)
    thread = threading.Thread(
        target=_run,
        args=(settings, sessions, path, status, state, actor, hit),
        name=f"console-import-{job[:6]}",
        daemon=True,
    )
    thread.start()
    return job


def _run(
    settings: Settings,
    sessions: sessionmaker[Session],
    path: Path,
    status: Path,
    state: dict[str, Any],
    actor: str,
    hit: Hit,
) -> None:
    last = 0.0

    def progress(done: int) -> None:
        nonlocal last
        state["bytes_done"] = done
        if time.monotonic() - last >= WRITE_EVERY:
            last = time.monotonic()
            _write(status, state)

    outcome = "failed"  # until the import says otherwise
    detail: dict[str, Any] = {}
    try:
        report = import_contacts(
            sessions,
            path,
            source=f"console:{state['file']}",
            actor=actor,
            policy_version=settings.policy_version,
            progress=progress,
            signer=TokenSigner(settings.secret_keys),
        )
    except (ValueError, UnicodeError) as exc:  # the file as a whole: nothing imported
        state.update(state="failed", error=str(exc))
        outcome, detail = "refused", {"why": str(exc)[:300]}
    except Exception:  # noqa: BLE001 - the page must end, and say so
        log.exception("console contacts import failed")
        state.update(state="failed", error="the import failed; nothing was imported")
        outcome = "failed"
    else:
        state.update(state="done", bytes_done=state["bytes_total"], report=_report(report))
        outcome = "ok"
        detail = {"read": report.read, "created": report.created, "invalid": report.invalid}
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
        # The audit event first, then the state the page polls: a job shown as ended has
        # its event recorded (or its failure to record it logged).
        try:
            with session_scope(sessions) as session:
                record_event(
                    session,
                    "console_contacts_import",
                    actor=actor,
                    hit=hit,
                    outcome=outcome,
                    **detail,
                )
        except Exception:  # noqa: BLE001 - the import stands; say it was not recorded
            log.warning("could not record the console import event", exc_info=True)
        finally:
            _write(status, state)


def read_job(settings: Settings, job: str) -> dict[str, Any] | None:
    """The job's state, or None for an unknown (or malformed) id."""
    if not job.replace("-", "").replace("_", "").isalnum() or len(job) > 40:
        return None
    try:
        data: dict[str, Any] = json.loads((_folder(settings) / f"{job}.json").read_text())
    except (OSError, ValueError):
        return None
    return data
