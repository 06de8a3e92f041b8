"""Tokens never reach a log: a signed link in a log line is a key to someone's preferences.

Every path segment after ``/u/``, ``/preferences/`` and ``/affiliates/download/`` is a token,
and so is any ``token=`` or ``csrf=`` value in a query string; :func:`redact` replaces them
with ``[token]``. :func:`install` puts :class:`RedactTokens` on every logger that writes what
the web app serves: the built-in server's request log (``werkzeug``), the production
server's access and own logs (granian's; gunicorn's for the console), and the app's own
logger (Flask logs the path of a request that failed).
"""

from __future__ import annotations

import logging
import re

from flask import Flask

REDACTED = "[token]"
_TOKEN_IN_PATH = re.compile(r"(/(?:u|preferences|affiliates/download)/)[^\s/?#\"']+")
_TOKEN_IN_QUERY = re.compile(r"([?&](?:token|csrf)=)[^\s&#\"']+", re.IGNORECASE)
LOGGERS = ("werkzeug", "granian.access", "_granian", "gunicorn.access", "gunicorn.error")


def redact(text: str) -> str:
    """``text`` with every token in a recipient or affiliate path replaced by ``[token]``."""
    return _TOKEN_IN_QUERY.sub(rf"\1{REDACTED}", _TOKEN_IN_PATH.sub(rf"\1{REDACTED}", text))


class RedactTokens(logging.Filter):
    """Rewrites a record's message (and its traceback text) with the tokens taken out."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactTokens()


def install(app: Flask | None = None) -> None:
    """Put the filter on the server loggers (and ``app``'s logger); safe to call again."""
    loggers = [logging.getLogger(name) for name in LOGGERS]
    if app is not None:
        loggers.append(app.logger)
    for logger in loggers:
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
