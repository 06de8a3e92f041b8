"""gunicorn's own lines in our one log format.

gunicorn writes its arbiter's and workers' lines ("Booting worker", "Worker exiting", a
worker timeout, an error while loading the app) through its own handlers in its own text
format. :class:`Logger` (``logger_class`` in ``dispatcher/console/gunicorn_conf.py``: the
console's recipe; the recipient pages run on granian, ``dispatcher/web/production.py``)
hands them to the handler that :func:`~dispatcher.ops.logs.setup_logging` puts on the root
logger instead, so with ``log_format = "json"`` every line on stderr is one JSON object,
redacted like the rest.
The access log stays off (request paths carry link tokens).
"""

from __future__ import annotations

import sys
from typing import Any

from gunicorn import glogging

from dispatcher.ops.logs import setup_logging
from dispatcher.settings import Settings, SettingsError, load_settings


def settings_or_exit() -> Settings:
    """The settings, or one line naming the bad setting and exit 2 (no traceback)."""
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"configuration: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class Logger(glogging.Logger):
    """gunicorn's error log through the root logger's handler; no access log."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        settings = settings_or_exit()
        setup_logging(settings.log_format, settings.log_level)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True
        self.error_log.setLevel(self.loglevel)
