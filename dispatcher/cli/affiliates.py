"""``dispatcher affiliates``: records, filtered exports, suppression feeds."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from dispatcher.cli import AppContext, actor_option, pass_app
from dispatcher.db import session_scope
from dispatcher.models import Affiliate
from dispatcher.sharing.affiliates import (
    AffiliateError,
    add_affiliate,
    disable_affiliate,
    get_affiliate,
)
from dispatcher.sharing.export import export, feed, feed_body, last_export


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
@actor_option
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
        f"affiliate {name} added. Its credential (shown once, only a hash is kept; hand it "
        f"over a safe channel):\n{credential}\n"
        f"It is sent as HTTP Basic (user {name}, password the credential) or as the header "
        f"'Authorization: Bearer <credential>'."
    )


@affiliates.command("list")
@pass_app
def list_(app: AppContext) -> None:
    """Every affiliate: state, contact, whitelisted fields, last export."""
    with session_scope(app.sessions) as session:
        rows = session.scalars(select(Affiliate).order_by(Affiliate.name)).all()
        if not rows:
            click.echo("no affiliates (add one with: dispatcher affiliates add NAME ...)")
        for row in rows:
            state = f"disabled {row.disabled_at:%Y-%m-%d}" if row.disabled_at else "enabled"
            latest = last_export(session, row.id)
            exported = f"{latest.created_at:%Y-%m-%d %H:%M}" if latest else "never"
            click.echo(
                f"{row.name:<24}{state:<20}{row.contact_email:<32}"
                f"{','.join(row.fields):<32}last export: {exported}"
            )


@affiliates.command("disable")
@click.argument("name")
@actor_option
@pass_app
def disable(app: AppContext, name: str, actor: str) -> None:
    """Disable an affiliate: no more exports, downloads or feeds."""
    try:
        with session_scope(app.sessions) as session:
            disable_affiliate(session, name, actor=actor)
    except AffiliateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"affiliate {name} disabled")


class _Bar:
    """A click progress bar sized on the first report (the total is known only then)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=max(total, 1), label="exporting", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@affiliates.command("export")
@click.argument("name")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="where to write the CSV (default: a new file under <home>/exports/)",
)
@actor_option
@pass_app
def export_(app: AppContext, name: str, out: Path | None, actor: str) -> None:
    """Write NAME's filtered list (CSV) and print a signed, expiring download URL."""
    bar = _Bar()
    try:
        release = export(app.sessions, app.settings, name, actor=actor, out=out, progress=bar)
    except AffiliateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()
    click.echo(f"{release.rows} contacts written to {release.path}\nsha256 {release.sha256}")
    click.echo(
        f"download (valid {app.settings.affiliate_link_seconds / 86400:g} days, "
        f"needs the affiliate's credential):\n{release.url}"
    )


@affiliates.command("feed")
@click.argument("name")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z"]),
    default=None,
    help="ISO time with zone, e.g. 2025-01-01T00:00:00+00:00 (default: the last export)",
)
@actor_option
@pass_app
def feed_(app: AppContext, name: str, since: datetime | None, actor: str) -> None:
    """SHA-256 of addresses NAME holds and must purge (suppressed or consent withdrawn)."""
    try:
        with session_scope(app.sessions) as session:
            result = feed(session, get_affiliate(session, name), since=since, actor=actor)
    except AffiliateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(feed_body(result.digests), nl=False)
    click.echo(f"{len(result.digests)} addresses to purge, {result.basis}", err=True)


COMMANDS = [affiliates]
