"""The staff command line: ``dispatcher --help``.

Each command group lives in its own module of this package and is registered below.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from functools import cached_property

import click
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.settings import Settings, SettingsError, load_settings
from suppression.tokens import TokenSigner


@dataclass
class AppContext:
    """What every command needs, built on first use (``--help`` touches nothing)."""

    _settings: Settings | None = None
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings()
            except SettingsError as exc:
                raise click.ClickException(f"configuration: {exc}") from None
        return self._settings

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        self._engine = make_engine(self.settings.database_url)
        return make_sessionmaker(self._engine)

    @cached_property
    def signer(self) -> TokenSigner:
        try:
            return TokenSigner(self.settings.secret_keys)
        except ValueError as exc:
            raise click.ClickException(f"configuration: {exc}") from None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


pass_app = click.make_pass_decorator(AppContext, ensure=True)

# Every staff command records who asked.
actor_option = click.option(
    "--actor",
    default=getpass.getuser,
    show_default="your user name",
    help="who is asking (recorded in the audit trail)",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Killer Tracks marketing dispatcher: staff commands."""
    app = ctx.ensure_object(AppContext)
    ctx.call_on_close(app.close)
    # Every command checks every setting before doing anything: a key too short or a URL
    # mistyped stops it here with one line, not a worker later with a traceback.
    settings = app.settings
    # Staff commands print their own results; their log shows warnings and worse only.
    from dispatcher.ops.logs import setup_logging

    level = settings.log_level.upper()
    setup_logging(settings.log_format, level if level in ("WARNING", "ERROR") else "WARNING")


def _register() -> None:
    from dispatcher.cli import (
        affiliates,
        campaigns,
        console,
        contacts,
        database,
        inbound,
        ops,
        privacy,
        services,
        stats,
        suppress,
        web,
    )

    modules = (
        database,
        contacts,
        suppress,
        campaigns,
        affiliates,
        stats,
        privacy,
        inbound,
        services,
        web,
        console,
        ops,
    )
    for module in modules:
        for command in getattr(module, "COMMANDS", ()):
            main.add_command(command)


_register()


def echo_error(message: str) -> None:
    click.secho(message, fg="red", err=True)
