"""``dispatcher serve``: the recipient pages on the built-in server."""

from __future__ import annotations

import signal

import click

from dispatcher.cli import AppContext, pass_app


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8025, show_default=True, type=int)
@click.option(
    "--read-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a connection may stay silent (while sending a request, or idle between "
    "requests) before it is closed.",
)
@pass_app
def serve(app: AppContext, host: str, port: int, read_timeout: float) -> None:
    """Serve the unsubscribe and preference pages (built-in server).

    In production run them with `dispatcher web` instead, behind the TLS proxy that
    DISPATCHER_BASE_URL names.
    """
    from werkzeug.serving import WSGIRequestHandler, make_server

    from dispatcher.ops.logs import setup_logging
    from dispatcher.web import create_app

    setup_logging(app.settings.log_format, app.settings.log_level)

    class Handler(WSGIRequestHandler):
        # socketserver applies it to every read: a client that stops sending is let go.
        timeout = read_timeout

    web = create_app(app.settings)
    server = make_server(host, port, web, threaded=True, request_handler=Handler)
    click.echo(f"serving on http://{host}:{server.server_port} (Ctrl-C to stop)")
    # SIGTERM (systemd, kill) stops as Ctrl-C does: the page views counted are written.
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        web.extensions["dispatcher.hits"].close()


def _stop(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@click.command("web")
@click.option("--bind", help="host:port  [default: DISPATCHER_WEB_BIND, else 127.0.0.1:8025]")
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="processes  [default: DISPATCHER_WEB_WORKERS, else one per core]",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    help="request threads per process  [default: DISPATCHER_WEB_THREADS]",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="A line per request (the tokens in its path replaced by [token]).",
)
@pass_app
def web(
    app: AppContext, bind: str | None, workers: int | None, threads: int | None, access_log: bool
) -> None:
    """Serve the recipient pages in production (granian: processes of request threads).

    Behind the TLS proxy that DISPATCHER_BASE_URL names, with the same DISPATCHER_*
    environment as every command (DISPATCHER_TRUSTED_PROXIES: how many proxies append to
    X-Forwarded-For, so that the audit log records the recipient's IP rather than the
    proxy's). SIGTERM stops it gracefully: requests under way are answered and the page
    views counted are written.
    """
    from dispatcher.web.production import RecipeError, recipe, serve

    try:
        shape = recipe(
            app.settings, bind=bind, workers=workers, threads=threads, access_log=access_log
        )
    except RecipeError as exc:
        raise click.ClickException(str(exc)) from None
    serve(app.settings, shape)


COMMANDS = [serve, web]
