"""``dispatcher affiliates``: records, filtered exports, suppression feeds."""

from __future__ import annotations

import getpass
from datetime import datetime
from pathlib import Path

import click

from dispatcher.affiliates import (
    AffiliateError,
    add_affiliate,
    disable_affiliate,
    eligible_count,
    export,
    feed,
    get_affiliate,
)
from dispatcher.cli import AppContext, pass_app
from dispatcher.db import session_scope
from dispatcher.models import Affiliate

ACTOR = click.option(
    "--actor",
    default=getpass.getuser,
    show_default="your user name",
    help="who is asking (recorded)",
)


@click.group("affiliates")
def affiliates() -> None:
    """Affiliated companies: opted-in, unsuppressed contacts only, whitelisted fields."""


@affiliates.command("add")
@click.argument("name")
@click.option("--contact", required=True, help="the affiliate's contact e-mail")
@click.option(
    "--fields",
    required=True,
    help="fields it may receive: email, first_name, last_name, attribute names",
)
@ACTOR
@pass_app
def add(app: AppContext, name: str, contact: str, fields: str, actor: str) -> None:
    """Add an affiliate; prints its credential once (only a hash is kept)."""
    try:
        with session_scope(app.sessions) as session:
            _, credential = add_affiliate(
                session, name, contact=contact, fields=fields, actor=actor
            )
    except AffiliateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"affiliate {name} added. Its credential (shown once, give it over a safe "
        f"channel):\n{credential}"
    )


@affiliates.command("list")
@pass_app
def list_(app: AppContext) -> None:
    """Every affiliate, its fields and whether it is enabled."""
    from sqlalchemy import select

    with session_scope(app.sessions) as session:
        for row in session.scalars(select(Affiliate).order_by(Affiliate.name)):
            state = "disabled" if row.disabled_at else "enabled"
            click.echo(f"{row.name:<24}{state:<10}{','.join(row.fields)}")


@affiliates.command("disable")
@click.argument("name")
@ACTOR
@pass_app
def disable(app: AppContext, name: str, actor: str) -> None:
    """Disable an affiliate: no more exports, downloads or feeds."""
    try:
        with session_scope(app.sessions) as session:
            disable_affiliate(session, name, actor=actor)
    except AffiliateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"affiliate {name} disabled")


@affiliates.command("export")
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@ACTOR
@pass_app
def export_(app: AppContext, name: str, out: Path | None, actor: str) -> None:
    """Write NAME's filtered list (CSV) and print a signed, expiring download URL."""
    try:
        with session_scope(app.sessions) as session:
            total = eligible_count(session, get_affiliate(session, name))
        with click.progressbar(length=max(total, 1), label="exporting") as bar:
            release = export(
                app.sessions, app.settings, name, actor=actor, out=out, progress=bar.update
            )
    except AffiliateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{release.rows} contacts written to {release.path}\nsha256 {release.sha256}")
    click.echo(
        f"download (valid {app.settings.affiliate_link_seconds / 86400:g} days, "
        f"needs the affiliate's credential):\n{release.url}"
    )


@affiliates.command("feed")
@click.argument("name")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z"]),
    default=None,
    help="default: the affiliate's last export",
)
@ACTOR
@pass_app
def feed_(app: AppContext, name: str, since: datetime | None, actor: str) -> None:
    """SHA-256 of addresses NAME must purge (suppressed or consent withdrawn)."""
    try:
        with session_scope(app.sessions) as session:
            digests, start = feed(session, get_affiliate(session, name), since=since, actor=actor)
    except AffiliateError as exc:
        raise click.ClickException(str(exc)) from None
    for digest in digests:
        click.echo(digest)
    click.echo(
        f"{len(digests)} addresses to purge since "
        f"{start.isoformat() if start else 'the beginning'}",
        err=True,
    )


COMMANDS = [affiliates]
