"""``dispatcher person`` / ``retention`` / ``audit``: a person's rights and the audit trail."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from dispatcher.cli import AppContext, actor_option, pass_app
from dispatcher.db import session_scope
from dispatcher.privacy.access import PersonNotFound, person_record
from dispatcher.privacy.erasure import ErasureError, erase_person
from dispatcher.privacy.retention import apply_retention
from suppression.address import InvalidAddress
from suppression.audit import seal_events, verify_chain


@click.group("person")
def person() -> None:
    """A person's data: access (export) and erasure, on their request."""


@person.command("export")
@click.argument("address")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@actor_option
@pass_app
def export_cmd(app: AppContext, address: str, out: Path | None, actor: str) -> None:
    """Write everything held about ADDRESS as one JSON document (audited)."""
    try:
        with session_scope(app.sessions) as session:
            doc = person_record(session, address, actor=actor)
    except (InvalidAddress, PersonNotFound) as exc:
        raise click.ClickException(str(exc)) from None
    body = json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if out is None:
        click.echo(body, nl=False)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body)
    click.echo(f"wrote {out} (mode 0600)", err=True)


@person.command("erase")
@click.argument("address")
@click.option("--reason", required=True, help="why (the request's date and reference)")
@actor_option
@pass_app
def erase_cmd(app: AppContext, address: str, reason: str, actor: str) -> None:
    """Delete ADDRESS's personal data; keep only a keyed hash, suppressed for good."""
    try:
        with session_scope(app.sessions) as session:
            report = erase_person(session, app.signer, address, reason=reason, actor=actor)
    except (InvalidAddress, ErasureError) as exc:
        raise click.ClickException(str(exc)) from None
    if not report.newly_erased:
        click.echo("already erased: nothing changed")
    elif not report.was_known:
        click.echo("no data was held; the address's hash is recorded so it is never added")
    else:
        click.echo(
            f"erased: {report.contacts} contact(s) cleared, {report.stopped} queued "
            "message(s) stopped; only a keyed hash remains, suppressed"
        )


@click.group("retention")
def retention() -> None:
    """Remove personal data past its retention window (settings retention_*_days)."""


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="count what would go, change nothing")
@pass_app
def retention_run(app: AppContext, dry_run: bool) -> None:
    with session_scope(app.sessions) as session:
        report = apply_retention(session, app.settings, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    s = app.settings
    click.echo(
        f"{verb}: IP and browser of {report.hits_anonymised} page hit(s) older than "
        f"{s.retention_hit_days:g} days; {report.export_files_removed} affiliate export file(s) "
        f"older than {s.retention_export_days:g} days; {report.shares_removed} share record(s) "
        f"older than {s.retention_share_days:g} days; {report.web_counters_removed} spent "
        f"counter(s) of refused web requests; {report.inbound_raw_removed} raw inbound "
        f"report(s) older than {s.inbound_keep_days} days"
    )


@click.group("audit")
def audit() -> None:
    """The tamper-evident audit trail."""


@audit.command("seal")
@pass_app
def audit_seal(app: AppContext) -> None:
    """Seal the events written since the last pass into the hash chain (beat does this)."""
    total = 0
    while True:
        with session_scope(app.sessions) as session:
            count = seal_events(session)
        total += count
        if count == 0:
            break
    click.echo(f"sealed {total} event(s)")


@audit.command("verify")
@pass_app
def audit_verify(app: AppContext) -> None:
    """Recompute the chain; exit 1 naming the first broken link."""
    with session_scope(app.sessions) as session:
        report = verify_chain(session)
    click.echo(f"{report.sealed} sealed event(s) verified; {report.unsealed} not sealed yet")
    if not report.ok:
        raise click.ClickException(f"broken at link {report.broken_at}: {report.problem}")


COMMANDS = [person, retention, audit]
