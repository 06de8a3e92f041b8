"""``dispatcher serve``: the recipient pages on the built-in server."""

from __future__ import annotations

import click

from dispatcher.cli import AppContext, pass_app


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8025, show_default=True, type=int)
@pass_app
def serve(app: AppContext, host: str, port: int) -> None:
    """Serve the unsubscribe and preference pages (built-in server).

    In production run them under gunicorn, behind the TLS proxy that DISPATCHER_BASE_URL
    names, with the same DISPATCHER_* environment:

    gunicorn -w 4 -b 127.0.0.1:8025 'dispatcher.web:create_app(trusted_proxies=1)'

    (trusted_proxies: how many proxies append to X-Forwarded-For, so that the audit log
    records the recipient's IP rather than the proxy's.)
    """
    from werkzeug.serving import run_simple

    from dispatcher.web import create_app

    run_simple(host, port, create_app(app.settings), threaded=True)


COMMANDS = [serve]
