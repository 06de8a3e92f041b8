"""``dispatcher contacts``: import contacts and their consent; look one up."""

from __future__ import annotations

from pathlib import Path

import click

from dispatcher.cli import AppContext, actor_option, pass_app
from dispatcher.contacts.importer import ImportFileError, import_contacts
from dispatcher.contacts.mapping import PRESETS
from suppression.consent import Verdict

SHOWN_REFUSALS = 20


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
@click.option(
    "--map",
    "mapping",
    default=None,
    metavar='"COLUMN=FIELD,…"',
    help="what the file's columns are: email, first_name, last_name, marketing_consent, "
    "affiliates_consent, consent_source, consent_at, tags, an attribute name, or - to leave "
    'a column out (e.g. "Email Address=email,First Name=first_name,Fax=-")',
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help="read another product's export: a Mailchimp audience export (subscribed, "
    "unsubscribed or cleaned members), a listmonk subscribers export, a Mautic contacts export",
)
@actor_option
@pass_app
def import_(
    app: AppContext,
    file: Path,
    source: str | None,
    mapping: str | None,
    preset: str | None,
    actor: str,
) -> None:
    """Import FILE.csv (UTF-8).

    Columns: email (required), first_name, last_name, marketing_consent,
    affiliates_consent (yes/no, empty = never asked), consent_source, consent_at (ISO-8601),
    tags (jazz;rock) and any other column, kept as an attribute for audiences.
    An address may be on several rows (a consent history): per scope the latest consent_at
    decides, an opt-out wins a tie or a missing time, and older rows are kept as history.
    Invalid rows are listed with their line and skipped; valid rows are imported. Exit code 1
    when any row was invalid. Importing again changes nothing, and an import never turns an
    opt-out back into an opt-in.
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
                mapping=mapping,
                preset=preset,
                signer=app.signer,
            )
        except ImportFileError as exc:
            raise click.ClickException(f"{file}: {exc}; nothing was imported") from None
    changed = report.count(Verdict.CHANGED) + report.count(Verdict.RENEWED)
    click.echo(
        f"rows read {report.read:>8}\n  created {report.created:>8}\n"
        f"  updated {report.updated:>8}\n  unchanged {report.unchanged:>6}\n"
        f"  invalid {report.invalid:>8}\n"
        f"consent: {changed} changed a state, {report.count(Verdict.HISTORY)} kept as history, "
        f"{report.count(Verdict.KNOWN)} already known, {report.count(Verdict.REFUSED)} refused"
    )
    if report.refused:
        click.echo(f"  {len(report.refused)} opt-outs kept (an import cannot opt anyone back in):")
        for note in report.refused[:SHOWN_REFUSALS]:
            click.echo(f"  line {note.line}: {note.field}: refused")
        if len(report.refused) > SHOWN_REFUSALS:
            click.echo(f"  … and {len(report.refused) - SHOWN_REFUSALS} more")
    for error in report.errors:
        click.echo(f"line {error.line}: {error.field}: {error.reason}", err=True)
    if report.errors:
        raise SystemExit(1)


COMMANDS = [contacts]
