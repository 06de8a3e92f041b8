"""``dispatcher suppress``: the suppression list, by hand."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dispatcher.cli import AppContext, actor_option, pass_app
from dispatcher.contacts.importer import ImportFileError
from dispatcher.contacts.suppress import (
    ERASED_ANSWER,
    import_suppressions,
    lift_address,
    suppress_address,
)
from dispatcher.db import session_scope
from suppression.address import InvalidAddress
from suppression.models import Reason
from suppression.suppressions import PERMANENT, SuppressionError, list_suppressions

REASONS = click.Choice([r.value for r in Reason if r not in PERMANENT])


@click.group("suppress")
def suppress() -> None:
    """Keep addresses from receiving mail (postal requests, legal, bounces...)."""


@suppress.command("add")
@click.argument("address")
@click.option("--reason", type=REASONS, required=True)
@click.option(
    "--scope",
    default=None,
    help="global (all mail, service notices included), marketing, affiliates or "
    "affiliate:<id>. Default: marketing for unsubscribe (the recipient's own wish is about "
    "marketing), global for every other reason (a letter, a bounce or a complaint means no mail)",
)
@click.option("--note", default=None, help="e.g. the letter's date and reference")
@actor_option
@pass_app
def add(
    app: AppContext, address: str, reason: str, scope: str | None, note: str | None, actor: str
) -> None:
    """Suppress ADDRESS; queued mail it may no longer receive is stopped at once.

    Exit code 1, with nothing changed, when ADDRESS or --scope is not valid.
    """
    try:
        with session_scope(app.sessions) as session:
            added = suppress_address(
                session,
                address,
                reason=reason,
                scope=scope,
                note=note,
                actor=actor,
                signer=app.signer,
            )
    except (InvalidAddress, SuppressionError) as exc:
        raise click.ClickException(f"{address!r}: {exc}") from None
    if added.erased:
        click.echo(ERASED_ANSWER)
    else:
        click.echo("suppressed" if added.created else "already suppressed for that reason")
    if added.stopped:
        click.echo(f"{added.stopped} queued deliveries stopped")


@suppress.command("list")
@click.option("--all", "include_lifted", is_flag=True, help="include lifted suppressions")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def list_(app: AppContext, include_lifted: bool, as_json: bool) -> None:
    """Active suppressions (with --all, lifted ones too)."""
    with session_scope(app.sessions) as session:
        rows = [
            {
                "address": address,
                "scope": s.scope,
                "reason": s.reason,
                "source": s.source,
                "note": s.note,
                "created_at": s.created_at.isoformat(),
                "created_by": s.created_by,
                "lifted_at": s.lifted_at.isoformat() if s.lifted_at else None,
                "lift_reason": s.lift_reason,
            }
            for address, s in list_suppressions(session, include_lifted=include_lifted)
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        lifted = (
            f"  lifted {str(row['lifted_at'])[:10]}: {row['lift_reason']}"
            if row["lifted_at"]
            else ""
        )
        click.echo(
            f"{row['address']:<40} {row['reason']:<15} {row['scope']:<12} "
            f"{str(row['created_at'])[:10]}{lifted}"
        )
    click.echo(f"{len(rows)} suppression(s)", err=True)


@suppress.command("remove")
@click.argument("address")
@click.option("--reason", "why", required=True, help="why staff lift it (recorded)")
@click.option("--only", type=REASONS, default=None, help="lift only suppressions of this reason")
@actor_option
@pass_app
def remove(app: AppContext, address: str, why: str, only: str | None, actor: str) -> None:
    """Staff override: lift ADDRESS's suppressions, with the reason recorded."""
    try:
        with session_scope(app.sessions) as session:
            count = lift_address(session, address, why=why, actor=actor, only=only)
    except (InvalidAddress, SuppressionError) as exc:
        raise click.ClickException(f"{address!r}: {exc}") from None
    click.echo(f"{count} suppression(s) lifted")


@suppress.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@actor_option
@pass_app
def import_(app: AppContext, file: Path, actor: str) -> None:
    """Bulk suppressions from FILE.csv: email, reason, and optionally scope, note."""
    try:
        report = import_suppressions(app.sessions, file, actor=actor, signer=app.signer)
    except ImportFileError as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    click.echo(
        f"{report.created} added, {report.existing} already there, {len(report.errors)} invalid"
    )
    for line in report.erased:
        click.echo(f"line {line}: {ERASED_ANSWER}", err=True)
    for error in report.errors:
        click.echo(f"line {error.line}: {error.field}: {error.reason}", err=True)
    if report.errors:
        raise SystemExit(1)


COMMANDS = [suppress]
