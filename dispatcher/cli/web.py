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

    In production run them under gunicorn instead:
    gunicorn -w 4 -b 0.0.0.0:8025 'dispatcher.web:create_app()'
    """
    from werkzeug.serving import run_simple

    from dispatcher.web import create_app

    run_simple(host, port, create_app(app.settings), threaded=True)


COMMANDS = [serve]
