"""``dispatcher demo``: one campaign end to end on the embedded defaults."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import click

from dispatcher.campaigns.services import campaign_report, create_campaign, schedule_campaign
from dispatcher.cli import AppContext, pass_app
from dispatcher.cli.campaigns import print_report
from dispatcher.contacts.importer import import_contacts
from dispatcher.contacts.suppress import import_suppressions
from dispatcher.db import session_scope, upgrade
from dispatcher.settings import KEY_FILE_NAME, PROJECT_ROOT
from workers.process import WorkerFailed, WorkerProcess, wait_until

DEMO_DATA = PROJECT_ROOT / "dispatcher" / "demo"
FRESH = ("dispatcher.db", "broker.db", "outbox", "logs")


def _fresh_home(home: Path) -> None:
    """Remove what an earlier demo left (database, queue, outbox); keep the signing key."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in home.iterdir():
        if entry.name == KEY_FILE_NAME:
            continue
        if entry.name.startswith(FRESH) or entry.name.startswith("beat-"):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


@click.command("demo")
@click.option("--timeout", default=60.0, show_default=True, help="seconds to wait for sending")
@pass_app
def demo(app: AppContext, timeout: float) -> None:
    """Run a campaign end to end on the embedded defaults (fresh database under var/)."""
    settings = app.settings
    if not settings.embedded or not settings.database_url.startswith("sqlite"):
        raise click.ClickException(
            "the demo starts from an empty database and only runs on the embedded defaults "
            "(unset DISPATCHER_CONFIG and DISPATCHER_DATABASE_URL)"
        )
    started = time.monotonic()
    _fresh_home(settings.home)
    click.echo(f"1. fresh embedded database under {settings.home}")
    upgrade(settings)

    report = import_contacts(
        app.sessions,
        DEMO_DATA / "contacts.csv",
        source="demo import",
        actor="demo",
        policy_version=settings.policy_version,
        signer=app.signer,
    )
    click.echo(f"2. contacts: {report.created} imported, {report.invalid} invalid rows refused:")
    for error in report.errors:
        click.echo(f"     line {error.line}: {error.field}: {error.reason}")
    suppressed = import_suppressions(
        app.sessions, DEMO_DATA / "suppressions.csv", actor="demo", signer=app.signer
    )
    click.echo(f"   suppressions: {suppressed.created} added (one of every reason)")

    with session_scope(app.sessions) as session:
        campaign = create_campaign(
            session,
            settings,
            name="December new releases",
            subject="New tracks for your next project, {{ greeting_name }}",
            template="new-releases",
            actor="demo",
        )
        schedule_campaign(session, settings, campaign.id, actor="demo")
        campaign_id = campaign.id
    click.echo(
        f"3. campaign {campaign_id} created from templates/email/new-releases, scheduled now"
    )

    env = {
        **os.environ,
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_BEAT_INTERVAL_SECONDS": "0.5",
    }
    worker = WorkerProcess(
        env,
        settings.home / "logs" / "worker.log",
        pool="threads",
        concurrency=2,
        beat=True,
        loglevel="info",
    )
    click.echo("4. starting a Celery worker (with beat) on the embedded SQLite broker ...")
    try:
        with worker:

            def finished() -> bool:
                with session_scope(app.sessions) as session:
                    return campaign_report(session, campaign_id).status == "done"

            wait_until(finished, timeout, interval=0.3, what="campaign done")
    except (TimeoutError, WorkerFailed) as exc:
        raise click.ClickException(f"{exc}\nworker log: {worker.log_path}") from None

    with session_scope(app.sessions) as session:
        result = campaign_report(session, campaign_id)
    click.echo("5. done:\n")
    print_report(result)
    outbox = settings.outbox
    count = len(list((outbox / "new").iterdir())) if outbox and (outbox / "new").exists() else 0
    click.echo(
        f"\n{count} messages in the outbox: {outbox}/new "
        f"(finished in {time.monotonic() - started:.1f}s)"
    )
    click.echo(
        "Open one with any mail client, or: dispatcher campaign preview "
        f"{campaign_id} --to <address>"
    )
