"""One logging set-up for every entry point (CLI, worker, beat, web servers).

Readable text by default, JSON lines when ``log_format = "json"``. Every line written while a
task runs carries the ids of its task, campaign and batch (:func:`log_context`, fed by the
worker from the task's arguments). :class:`Redact` is the last line of defence against
personal data: the code logs ids and kinds, never an address, a name or a token, and the
filter blanks any address, signed token or URL password that slips through anyway.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
CONTEXT_FIELDS = ("task_id", "campaign_id", "batch")
_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "dispatcher_log_context", default=None
)

# An address (anything@domain), a URL's password, and signed tokens (itsdangerous: long
# base64url runs, optionally joined by dots), longest first.
_ADDRESS = re.compile(r"[^\s<>\"'(),;:\[\]]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]{2,}")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@")
_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{24,}(?:\.[A-Za-z0-9_-]{4,}){0,3}")


def redact(text: str) -> str:
    """``text`` without addresses, URL passwords or anything shaped like a signed token."""
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:<redacted>@", text)
    text = _ADDRESS.sub("<address>", text)
    return _TOKEN.sub(_token_or_word, text)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _token_or_word(match: re.Match[str]) -> str:
    # A signed token is random base64url: upper- and lower-case letters and digits mixed.
    # Identifiers (task names, file names, task ids as UUIDs, hex claim ids) are not.
    value = match.group(0)
    if _UUID.fullmatch(value):
        return value
    kinds = (str.isupper, str.islower, str.isdigit)
    if all(any(kind(c) for c in value) for kind in kinds):
        return "<token>"
    return value


class Redact(logging.Filter):
    """Formats the message and the traceback once, without personal data."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class Context(logging.Filter):
    """Copies the current task/campaign/batch ids onto the record (absent ones are None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _context.get() or {}
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, current.get(name))
        return True


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Every line logged in this block (this thread or task) carries ``ids``."""
    token = bind(**ids)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**ids: Any) -> contextvars.Token[Mapping[str, Any] | None]:
    """Add ``ids`` to the context until :func:`unbind` with the returned token."""
    current = _context.get() or {}
    return _context.set({**current, **{k: v for k, v in ids.items() if v is not None}})


def unbind(token: contextvars.Token[Mapping[str, Any] | None]) -> None:
    _context.reset(token)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS if getattr(record, n, None)]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, process, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


_MARK = "_dispatcher_handler"


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes to whatever ``sys.stderr`` is now (test runners and click swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override,unused-ignore]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def setup_logging(log_format: str = "text", level: str | int = "INFO") -> logging.Handler:
    """Configure the root logger (again: the handler of an earlier call is replaced)."""
    if log_format not in FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            root.removeHandler(handler)
    handler = _Stderr()
    setattr(handler, _MARK, True)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    # Context first, then redaction: the last thing a line passes before it is written.
    handler.addFilter(Context())
    handler.addFilter(Redact())
    root.addHandler(handler)
    logging.captureWarnings(True)  # warnings become log lines in the same format
    root.setLevel(level if isinstance(level, int) else level.upper())
    return handler
