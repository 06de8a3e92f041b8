"""``dispatcher contacts``: import contacts and their consent; look one up."""

from __future__ import annotations

from pathlib import Path

import click

from dispatcher.cli import AppContext, actor_option, pass_app
from dispatcher.contacts.importer import ImportFileError, import_contacts


@click.group("contacts")
def contacts() -> None:
    """Contacts and their consent."""


@contacts.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--source",
    default=None,
    help="where these addresses came from "
    "(default: the file name; a consent_source column wins per row)",
)
@actor_option
@pass_app
def import_(app: AppContext, file: Path, source: str | None, actor: str) -> None:
    """Import FILE.csv (UTF-8).

    Columns: email (required), first_name, last_name, marketing_consent,
    affiliates_consent (yes/no, empty = never asked), consent_source, consent_at (ISO-8601),
    tags (jazz;rock) and any other column, kept as an attribute for audiences.
    Invalid rows are listed with their line and skipped; valid rows are imported. Exit code 1
    when any row was invalid. Importing again changes nothing, and never turns an opt-out
    back into an opt-in.
    """
    with click.progressbar(length=file.stat().st_size, label="importing") as bar:
        try:
            report = import_contacts(
                app.sessions,
                file,
                source=source or f"import:{file.name}",
                actor=actor,
                policy_version=app.settings.policy_version,
                progress=bar.update,
            )
        except ImportFileError as exc:
            raise click.ClickException(f"{file}: {exc}; nothing was imported") from None
    click.echo(
        f"rows read {report.read:>8}\n  created {report.created:>8}\n"
        f"  updated {report.updated:>8}\n  unchanged {report.unchanged:>6}\n"
        f"  invalid {report.invalid:>8}"
    )
    kept = sum(n for k, n in report.consent.items() if k.endswith(":kept_opt_out"))
    if kept:
        click.echo(f"  {kept} opt-outs kept (an import cannot opt anyone back in)")
    for error in report.errors:
        click.echo(f"line {error.line}: {error.field}: {error.reason}", err=True)
    if report.errors:
        raise SystemExit(1)


COMMANDS = [contacts]
