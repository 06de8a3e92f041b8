"""gunicorn settings for the staff console in production::

    gunicorn -c python:dispatcher.console.gunicorn_conf \\
        'dispatcher.console:create_console_app(trusted_proxies=1)'

On an internal address only, behind the staff TLS proxy. ``DISPATCHER_CONSOLE_BIND``
(default ``127.0.0.1:8026``) and ``DISPATCHER_CONSOLE_WORKERS`` (default 2) adjust it;
gunicorn's own ``-b``/``-w`` options override too.
"""

from __future__ import annotations

import os

from dispatcher.ops.gunicorn_log import settings_or_exit

settings_or_exit()  # a bad setting stops the arbiter with one line naming it
bind = os.environ.get("DISPATCHER_CONSOLE_BIND", "127.0.0.1:8026")
workers = int(os.environ.get("DISPATCHER_CONSOLE_WORKERS", "2"))
timeout = 60  # a large contacts upload is one request
graceful_timeout = 30
limit_request_line = 4096
limit_request_fields = 50
# No access log: URLs carry set-password tokens; staff actions are in the audit log.
accesslog = None
logger_class = "dispatcher.ops.gunicorn_log.Logger"
