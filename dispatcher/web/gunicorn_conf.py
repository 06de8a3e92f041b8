"""gunicorn settings for the recipient pages in production::

    gunicorn -c python:dispatcher.web.gunicorn_conf 'dispatcher.web:create_app()'

Threaded workers (``gthread``): a client that sends its request slowly holds one thread, not
a whole process, so a few slow or malicious clients cannot stop unsubscribes the way they
stop gunicorn's default sync workers (four of them held all four workers of the old recipe).
Each process has ``web_threads`` threads (setting ``DISPATCHER_WEB_THREADS``, default 16)
and the app sizes its database pool to match: ``post_fork`` hands the thread count gunicorn
really uses (``--threads`` on the command line wins) to the app it loads, so the pool never
falls short of the threads (``dispatcher.web.web_pool``). Against many slow clients put a buffering
proxy in front (nginx, README "The web edge"): it reads each request whole first.

``DISPATCHER_WEB_BIND`` (default ``127.0.0.1:8025``) and ``DISPATCHER_WEB_WORKERS``
(default: one per CPU) adjust the rest; gunicorn's own ``-b``/``-w`` options override too.
"""

from __future__ import annotations

import os
from typing import Any

from dispatcher.ops.gunicorn_log import settings_or_exit

bind = os.environ.get("DISPATCHER_WEB_BIND", "127.0.0.1:8025")
worker_class = "gthread"
workers = int(os.environ.get("DISPATCHER_WEB_WORKERS", os.cpu_count() or 1))
# The same setting the app reads to size its database pool. A bad setting stops the
# arbiter with one line naming it.
threads = settings_or_exit().web_threads
# Kept-alive connections wait in the poller, not in a thread; this many per process.
worker_connections = 4 * threads
keepalive = 5
# A worker that stops answering its arbiter for this long is replaced.
timeout = 30
graceful_timeout = 30
# Our requests are small: a long request line or many headers is abuse, refused with 4xx.
limit_request_line = 4096
limit_request_fields = 50
limit_request_field_size = 8190
# No access log: request paths carry recipients' link tokens. Every recipient hit is in the
# audit trail (the events table) instead, with its time, IP, user agent and outcome.
accesslog = None
# The arbiter's and workers' own lines in our format (JSON lines when configured).
logger_class = "dispatcher.ops.gunicorn_log.Logger"


def post_fork(server: Any, worker: Any) -> None:
    """Before the worker loads the app: size its pool for the threads this worker runs."""
    os.environ["DISPATCHER_WEB_THREADS"] = str(max(1, int(worker.cfg.threads)))
