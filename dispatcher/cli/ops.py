"""``dispatcher doctor`` and ``dispatcher metrics serve`` (README, "Operations")."""

from __future__ import annotations

import json

import click

from dispatcher.cli import AppContext, pass_app


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="one JSON document")
@click.option(
    "--skip",
    multiple=True,
    type=click.Choice(["broker", "mail", "dkim", "dns", "files", "heartbeats", "counts"]),
    help="leave a check out (repeatable), e.g. heartbeats before the services start",
)
@click.option(
    "--nameserver",
    metavar="IP[:PORT]",
    help="look the DKIM record up here (e.g. the domain's own server) instead of this "
    "machine's resolver",
)
@pass_app
def doctor(app: AppContext, as_json: bool, skip: tuple[str, ...], nameserver: str | None) -> None:
    """Check the database, migrations, keys, broker, mail relay, the DKIM key and its DNS
    record, file permissions, beat and workers, the campaign counters; say what is wrong and
    how to fix it. Exit code 1 when anything is wrong.

    The mail check connects, says EHLO, STARTTLS and AUTH as DISPATCHER_MAIL_URL asks, and
    QUITs: it sends nothing."""
    from dispatcher.ops.health import doctor as run

    app.sessions  # noqa: B018 - builds the engine
    assert app._engine is not None
    checks = run(
        app.settings,
        app._engine,
        app.sessions,
        skip=lambda name: name in skip,
        nameserver=nameserver,
    )
    wrong = [c for c in checks if not c.ok]
    if as_json:
        click.echo(json.dumps({"ok": not wrong, "checks": [c.as_dict() for c in checks]}))
    else:
        for check in checks:
            mark = click.style("ok  ", fg="green") if check.ok else click.style("FAIL", fg="red")
            click.echo(f"{mark} {check.name:<10} {check.detail}")
            if not check.ok and check.fix:
                click.echo(f"     {'':<10} fix: {check.fix}")
        click.echo(f"{len(wrong)} problem(s)" if wrong else "all good")
    if wrong:
        raise SystemExit(1)


@click.group("metrics")
def metrics() -> None:
    """Prometheus metrics of this machine's workers, beat and web app."""


@metrics.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="default: the metrics_port setting (9464)")
@pass_app
def metrics_serve(app: AppContext, host: str, port: int | None) -> None:
    """Serve /metrics: the counters the worker, beat and web processes under this
    DISPATCHER_HOME wrote (var/metrics/), and queued messages per campaign from the database."""
    from dispatcher.ops.metrics import serve

    port = port or app.settings.metrics_port
    click.echo(f"metrics on http://{host}:{port}/metrics", err=True)
    serve(app.settings, app.sessions, host, port)


COMMANDS = [doctor, metrics]
