"""``dispatcher console`` (the staff console) and ``dispatcher staff`` (its accounts)."""

from __future__ import annotations

import click

from dispatcher.cli import AppContext, actor_option, pass_app
from dispatcher.db import session_scope
from dispatcher.models import StaffRole


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8026, show_default=True, type=int)
@pass_app
def console(app: AppContext, host: str, port: int) -> None:
    """Serve the staff console (built-in server; keep it on the internal network).

    In production run it under gunicorn with the same DISPATCHER_* environment, and set
    DISPATCHER_CONSOLE_URL to its https address (its cookies are then Secure):

    gunicorn -c python:dispatcher.console.gunicorn_conf \\
        'dispatcher.console:create_console_app(trusted_proxies=1)'
    """
    from werkzeug.serving import run_simple

    from dispatcher.console import create_console_app
    from dispatcher.ops.logs import setup_logging

    setup_logging(app.settings.log_format, app.settings.log_level)
    run_simple(host, port, create_console_app(app.settings), threaded=True)


@click.group("staff")
def staff() -> None:
    """Staff accounts of the console: add (prints a set-password link), list, disable."""


@staff.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice([r.value for r in StaffRole]), required=True)
@actor_option
@pass_app
def add(app: AppContext, email: str, role: str, actor: str) -> None:
    """Add a staff member; prints a one-time set-password link (it expires)."""
    from dispatcher.console.staff import StaffError, add_staff

    try:
        with session_scope(app.sessions) as session:
            _, link = add_staff(session, app.settings, email, role, actor=actor)
    except StaffError as exc:
        raise click.ClickException(str(exc)) from None
    hours = app.settings.staff_link_seconds / 3600
    click.echo(f"staff member added; set-password link (one use, {hours:g} hours):\n{link}")


@staff.command("link")
@click.argument("email")
@actor_option
@pass_app
def link(app: AppContext, email: str, actor: str) -> None:
    """A new set-password link (the earlier one stops working)."""
    from dispatcher.console.staff import StaffError, new_link

    try:
        with session_scope(app.sessions) as session:
            url = new_link(session, app.settings, email, actor=actor)
    except StaffError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(url)


@staff.command("list")
@pass_app
def list_(app: AppContext) -> None:
    """Every staff account, its role and state."""
    from dispatcher.console.staff import list_staff

    with session_scope(app.sessions) as session:
        for row in list_staff(session):
            state = (
                "disabled"
                if row.disabled_at
                else "password not set"
                if row.password_hash is None
                else "active"
            )
            click.echo(f"{row.email}\t{row.role}\t{state}")


@staff.command("disable")
@click.argument("email")
@actor_option
@pass_app
def disable(app: AppContext, email: str, actor: str) -> None:
    """Disable an account: it can no longer sign in (its session ends at the next request)."""
    from dispatcher.console.staff import StaffError, disable_staff

    try:
        with session_scope(app.sessions) as session:
            disable_staff(session, email, actor=actor)
    except StaffError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{email} disabled")


COMMANDS = [console, staff]
