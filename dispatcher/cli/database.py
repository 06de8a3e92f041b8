"""``dispatcher db``: the schema."""

from __future__ import annotations

import click

from dispatcher.cli import AppContext, pass_app
from dispatcher.db import upgrade


@click.group("db")
def db() -> None:
    """Create or migrate the database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_app
def db_upgrade(app: AppContext, revision: str) -> None:
    """Create or migrate the schema (Alembic)."""
    upgrade(app.settings, revision)
    click.echo(f"database at revision {revision}")


COMMANDS = [db]
