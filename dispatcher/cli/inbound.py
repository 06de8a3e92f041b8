"""``dispatcher inbound``: bounces, complaints and mailto unsubscribes that come back."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from dispatcher.cli import AppContext, pass_app
from dispatcher.inbound import returnpath
from dispatcher.inbound.apply import message_key
from dispatcher.inbound.classify import PARSE_LIMIT, classify
from dispatcher.inbound.sources import InboundError, Tally, apply_raw, read_paths
from suppression.tokens import TokenSigner

_PATHS = click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path)
)


@click.group("inbound")
def inbound() -> None:
    """Read what comes back: bounces, complaints, mailto unsubscribes."""


@inbound.command("classify")
@_PATHS
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@pass_app
def classify_command(app: AppContext, paths: tuple[Path, ...], as_json: bool) -> None:
    """Say what each message (file or maildir) is, and which of our deliveries it names
    with a valid tag; reads no database and changes nothing."""
    settings = app.settings
    signer = TokenSigner(settings.secret_keys)
    try:
        for name, raw in read_paths(list(paths), limit=PARSE_LIMIT * 32):
            report = classify(raw)
            found = returnpath.traces(signer, settings.return_path or "bounces@invalid", raw)
            matched = dataclasses.asdict(found[0]) if found else None
            row = {
                "file": name,
                "key": message_key(report, raw),
                **report.as_json(),
                "matched": matched,
            }
            if as_json:
                click.echo(json.dumps(row, sort_keys=True))
            else:
                click.echo(f"{report.kind:<13} {','.join(report.recipients) or '-':<40} {name}")
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None


@inbound.command("process")
@_PATHS
@click.option("--json", "as_json", is_flag=True, help="one JSON object per message")
@pass_app
def process(app: AppContext, paths: tuple[Path, ...], as_json: bool) -> None:
    """Apply each message (file or maildir): suppressions, unsubscribes; each only once."""
    settings = app.settings
    signer = TokenSigner(settings.secret_keys)
    tally = Tally()
    try:
        for name, raw in read_paths(list(paths), limit=settings.inbound_max_bytes):
            done = apply_raw(app.sessions, settings, signer, raw, source="file")
            tally.add(done)
            if as_json:
                click.echo(json.dumps({"file": name, **done.as_json()}, sort_keys=True))
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None
    summary = ", ".join(f"{n} {k}" for k, n in sorted(tally.counts.items())) or "no messages"
    click.echo(summary, err=as_json)


@inbound.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2525, type=int, show_default=True)
@click.option("--lmtp", is_flag=True, help="speak LMTP instead of SMTP")
@pass_app
def serve(app: AppContext, host: str, port: int, lmtp: bool) -> None:
    """Receive bounces and unsubscribe mails forwarded by the MTA (runs until stopped)."""
    from dispatcher.inbound.receiver import run_receiver

    run_receiver(app.settings, app.sessions, host=host, port=port, lmtp=lmtp)


COMMANDS = [inbound]
