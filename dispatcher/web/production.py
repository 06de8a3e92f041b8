"""The recipient pages in production: granian, a server whose HTTP layer is compiled (Rust),
running the Flask app in a few processes of a few threads each::

    dispatcher web            # DISPATCHER_WEB_BIND, DISPATCHER_WEB_WORKERS, DISPATCHER_WEB_THREADS

Why not gunicorn (the recipe until issue 18's last round): its threaded worker spent about
0.5 ms of CPU on each request of a trivial Flask view on our two-core machine, as much as
the unsubscribe page's own work; granian serves the same view for about 0.2 ms.
Connections, slow clients and keep-alive are held by its event loop, not by a Python
thread: a client trickling its headers holds no thread, so a thread pool the size of the
cores' work (``web_threads``) suffices and the app sizes its database pool to it
(``dispatcher.web.web_pool``).

Each worker process is started with ``spawn`` (a fresh interpreter that imports the app), not
``fork``: a forked granian worker leaves with ``os._exit`` and skips ``atexit``, so the page
views it counted (``dispatcher/web/hits.py``) would be lost at every clean stop.

What the server's own lines say goes through the root logger's handler
(:func:`dispatcher.ops.logs.setup_logging`: one format, redacted); there is no access log,
since request paths carry the links' tokens (``--access-log`` turns one on, with the tokens
redacted, ``dispatcher/web/redact.py``). Behind the TLS proxy that
``DISPATCHER_BASE_URL`` names; ``DISPATCHER_TRUSTED_PROXIES`` says how many proxies append to
``X-Forwarded-For``.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from typing import Any

from dispatcher.settings import Settings

APP = "dispatcher.web:create_app"
DEFAULT_BIND = "127.0.0.1:8025"
# A request's head (request line and headers) larger than this is refused (431): ours are
# small, and a server that buffers 400 KB of headers per connection is an easy target.
MAX_HEAD_BYTES = 16 * 1024
# A client that has not sent its whole head within this long is let go.
HEAD_TIMEOUT_MS = 30_000
# A worker told to stop finishes its requests (and writes its counted page views) within
# this long, or is killed: under systemd's TimeoutStopSec (30 s in deploy/), which would
# kill every process at once.
STOP_SECONDS = 20


@dataclass(frozen=True)
class Recipe:
    """Where to listen and how many processes of how many threads."""

    host: str
    port: int
    workers: int
    threads: int
    # A line per request (off by default; its paths' tokens are redacted either way).
    access_log: bool = False


class RecipeError(ValueError):
    """A bind, worker or thread count that cannot be served; names the setting."""


def recipe(
    settings: Settings,
    *,
    bind: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    access_log: bool = False,
) -> Recipe:
    """The server's shape: options given win over ``DISPATCHER_WEB_BIND`` /
    ``DISPATCHER_WEB_WORKERS`` and over ``web_threads`` (``DISPATCHER_WEB_THREADS``)."""
    where = bind or os.environ.get("DISPATCHER_WEB_BIND") or DEFAULT_BIND
    host, sep, port = where.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RecipeError(f"DISPATCHER_WEB_BIND (--bind) must be host:port, not {where!r}")
    if workers is None:
        raw = os.environ.get("DISPATCHER_WEB_WORKERS") or str(os.cpu_count() or 1)
        if not raw.isdigit() or not 1 <= int(raw) <= 256:
            raise RecipeError(f"DISPATCHER_WEB_WORKERS must be a number from 1 to 256, not {raw!r}")
        workers = int(raw)
    return Recipe(host.strip("[]"), int(port), workers, threads or settings.web_threads, access_log)


def server(settings: Settings, shape: Recipe, app: str = APP) -> Any:
    """A granian server of ``app`` (a factory, ``module:function``) for ``shape``, not yet
    started (``.serve()`` runs it until SIGTERM
    or SIGINT, then stops its workers gracefully)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    # The workers read the same settings from the environment as this process did; the
    # thread count they run is the one the app sizes its pool to.
    os.environ["DISPATCHER_WEB_THREADS"] = str(shape.threads)
    return Granian(
        app,
        factory=True,
        address=shape.host,
        port=shape.port,
        interface=Interfaces.WSGI,
        workers=shape.workers,
        blocking_threads=shape.threads,
        # HTTP/1.1 from the TLS proxy; no WebSockets on these pages.
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(
            header_read_timeout=HEAD_TIMEOUT_MS, max_buffer_size=MAX_HEAD_BYTES
        ),
        log_access=shape.access_log,
        # Its lines go to the root logger, whose handler create_app() sets up in each worker.
        log_dictconfig=_LOGGING,
        log_level=LogLevels(settings.log_level.lower()),
        respawn_failed_workers=True,
        workers_kill_timeout=STOP_SECONDS,
    )


def serve(settings: Settings, shape: Recipe, app: str = APP) -> None:
    """Run the production server in the foreground until it is told to stop (``app``: the
    benchmark's trivial view runs under the very same settings)."""
    from dispatcher.ops.logs import setup_logging

    multiprocessing.set_start_method("spawn", force=True)
    web = server(settings, shape, app)
    # After granian configured its loggers (which closes the handlers there were).
    setup_logging(settings.log_format, settings.log_level)
    web.serve()


# granian's loggers without handlers of their own: their lines reach the root logger's.
_LOGGING: dict[str, Any] = {
    "handlers": {},
    "loggers": {
        "_granian": {"handlers": [], "propagate": True},
        "granian.access": {"handlers": [], "propagate": True},
    },
}
