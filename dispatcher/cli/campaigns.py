"""``dispatcher campaign``: create, preview, schedule, pause, resume, cancel, report."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import click

from dispatcher.campaigns.fleet import probe_fleet, start_due_now
from dispatcher.campaigns.health import CampaignHealth, campaign_health, campaigns_in_trouble
from dispatcher.campaigns.links import dead_own_links
from dispatcher.campaigns.preview import preview_message
from dispatcher.campaigns.services import (
    CampaignError,
    CampaignReport,
    campaign_report,
    campaign_view,
    cancel_campaign,
    create_campaign,
    get_campaign,
    list_campaigns,
    pause_campaign,
    requeue_unknown,
    resume_campaign,
    schedule_campaign,
)
from dispatcher.cli import AppContext, actor_option, pass_app
from dispatcher.db import session_scope
from dispatcher.sending.rendering import list_templates
from dispatcher.sending.staff_text import StaffContent
from suppression.address import InvalidAddress
from suppression.models import utcnow


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group("campaign")
def campaign() -> None:
    """Create, schedule and follow marketing campaigns and service notices."""


@campaign.command("create")
@click.option("--name", required=True)
@click.option("--subject", required=True, help="may use {{ first_name }} and the like")
@click.option(
    "--template",
    default=None,
    help="a folder of templates/email/ (or give --body-html for content of your own)",
)
@click.option(
    "--body-html",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="the body (HTML; .md files are read as Markdown), rendered in the sandbox",
)
@click.option(
    "--body-text",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="the text part (default: made from the HTML)",
)
@click.option("--preheader", default="", help="with --body-html: the preview line")
@click.option(
    "--layout",
    default="_layout",
    show_default=True,
    help="with --body-html: the folder of templates/email/ whose base.html/base.txt wrap it",
)
@click.option(
    "--purpose",
    type=click.Choice(["marketing", "service_notice"]),
    default="marketing",
    show_default=True,
    help="marketing needs opt-in; service_notice is for changes to terms",
)
@click.option(
    "--audience",
    default=None,
    help=(
        "who gets it: empty for every contact; terms joined by ',' (all must hold): "
        "'tag:jazz', 'genre=jazz', 'genre!=jazz'; '|' inside a term for either"
    ),
)
@actor_option
@pass_app
def create(
    app: AppContext,
    name: str,
    subject: str,
    template: str | None,
    body_html: Path | None,
    body_text: Path | None,
    preheader: str,
    layout: str,
    purpose: str,
    audience: str | None,
    actor: str,
) -> None:
    """Create a draft campaign (checked now, and again when scheduled)."""
    content = None
    if (template is None) == (body_html is None):
        raise click.UsageError("give either --template or --body-html")
    if body_html is not None:
        content = StaffContent(
            version=0,
            subject=subject,
            preheader=preheader,
            body_format="markdown" if body_html.suffix.lower() == ".md" else "html",
            body=body_html.read_text(encoding="utf-8"),
            body_text=body_text.read_text(encoding="utf-8") if body_text else None,
            layout=layout,
        )
        template = layout
    assert template is not None
    try:
        with session_scope(app.sessions) as session:
            row = create_campaign(
                session,
                app.settings,
                name=name,
                subject=subject,
                template=template,
                purpose=purpose,
                audience=audience,
                actor=actor,
                content=content,
            )
            campaign_id = row.id
    except CampaignError as exc:
        raise _fail(exc) from None
    click.echo(f"campaign {campaign_id} created (draft)")


@campaign.command("templates")
@pass_app
def templates(app: AppContext) -> None:
    """List the e-mail templates campaigns can use."""
    for name in list_templates(app.settings):
        click.echo(name)


@campaign.command("preview")
@click.argument("campaign_id", type=int)
@click.option("--to", "to_address", required=True, help="a contact's address (or any address)")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the message (.eml) here instead of standard output",
)
@pass_app
def preview(app: AppContext, campaign_id: int, to_address: str, out: Path | None) -> None:
    """Render one message of the campaign as it would be sent; sends nothing."""
    try:
        with session_scope(app.sessions) as session:
            message = preview_message(session, app.settings, campaign_id, to_address)
    except CampaignError as exc:
        raise _fail(exc) from None
    except InvalidAddress as exc:
        raise click.ClickException(f"--to {to_address!r}: {exc}") from None
    if out is None:
        click.echo(message.decode("utf-8", errors="replace"))
    else:
        out.write_bytes(message)
        click.echo(f"written to {out}")


@campaign.command("schedule")
@click.argument("campaign_id", type=int)
@click.option(
    "--at",
    "at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z"]),
    default=None,
    help="ISO time with zone, e.g. 2026-12-01T09:00:00+00:00; now if absent",
)
@actor_option
@pass_app
def schedule(app: AppContext, campaign_id: int, at: datetime | None, actor: str) -> None:
    """Schedule a draft; the beat starts it when due (a worker must be running)."""
    try:
        with session_scope(app.sessions) as session:
            row = schedule_campaign(session, app.settings, campaign_id, at=at, actor=actor)
            when = row.scheduled_at
            dead = dead_own_links(app.settings, campaign_view(row))
    except CampaignError as exc:
        raise _fail(exc) from None
    click.echo(f"campaign {campaign_id} scheduled for {when:%Y-%m-%d %H:%M:%S %Z}")
    # Committed: a worker may start it now rather than at the beat's next tick.
    if when is not None and when <= utcnow() and not start_due_now(app.settings):
        click.echo(
            "warning: the broker did not take the request to start it now; the beat starts"
            f" it within {app.settings.beat_interval_seconds:g} s if it runs",
            err=True,
        )
    for link in dead:
        click.echo(
            f"warning: {link} is on our own host ({app.settings.base_url}), which answers"
            " 404 there; a link to the company's site uses {{ site_url }}",
            err=True,
        )


def _simple(action: str, help_text: str) -> click.Command:
    @click.command(action, help=help_text)
    @click.argument("campaign_id", type=int)
    @actor_option
    @pass_app
    def command(app: AppContext, campaign_id: int, actor: str) -> None:
        try:
            with session_scope(app.sessions) as session:
                if action == "cancel":
                    n = cancel_campaign(session, campaign_id, actor=actor)
                    message = f"campaign {campaign_id} cancelled; {n} queued messages dropped"
                elif action == "pause":
                    pause_campaign(session, campaign_id, actor=actor)
                    message = f"campaign {campaign_id} paused after the batches in flight"
                elif action == "resume":
                    resume_campaign(session, campaign_id, actor=actor)
                    message = f"campaign {campaign_id} resumed"
                else:
                    n = requeue_unknown(session, campaign_id, actor=actor)
                    message = (
                        f"campaign {campaign_id}: {n} messages of unknown outcome queued again"
                    )
        except CampaignError as exc:
            raise _fail(exc) from None
        click.echo(message)

    return command


campaign.add_command(_simple("cancel", "Stop a campaign; queued messages are dropped."))
campaign.add_command(_simple("pause", "Stop claiming new batches until resumed."))
campaign.add_command(_simple("resume", "Go on with a paused campaign."))
campaign.add_command(
    _simple(
        "resend-unknown",
        "Queue again the messages whose outcome a crash hid (they may arrive twice).",
    )
)


@campaign.command("list")
@pass_app
def list_(app: AppContext) -> None:
    """Every campaign with its status; `!` marks one in trouble (see `campaign status ID`)."""
    with session_scope(app.sessions) as session:
        rows = list_campaigns(session)
        trouble = campaigns_in_trouble(session, app.settings)
        click.echo(
            f"{'id':>5}  {'status':<10} {'trouble':<9} {'purpose':<15} {'template':<18} name"
        )
        for row in rows:
            mark = f"! {trouble[row.id]}" if row.id in trouble else ""
            click.echo(
                f"{row.id:>5}  {row.status:<10} {mark:<9} {row.purpose:<15} {row.template:<18} "
                f"{row.name}"
            )


def print_health(health: CampaignHealth) -> None:
    seen = f"{health.beat_seen_at:%Y-%m-%d %H:%M:%S} UTC" if health.beat_seen_at else "never"
    click.echo(f"  {'beat last seen':<24}{seen}")
    if health.broker_reachable is False:
        click.echo(f"  {'broker':<24}not reachable")
    elif health.workers is not None:
        names = ", ".join(health.workers) or "none"
        click.echo(f"  {'workers on ' + health.queue:<24}{names} ({health.workers_checked_by})")
    if health.ok:
        click.echo("  no problems seen")
        return
    click.echo("  problems")
    for problem in health.problems:
        tasks = f" ({problem.tasks} tasks)" if problem.tasks > 1 else ""
        last = f", last {problem.last_at:%Y-%m-%d %H:%M:%S} UTC" if problem.last_at else ""
        click.secho(f"    ! {problem.message}{tasks}{last}", fg="red")


def print_report(report: CampaignReport) -> None:
    click.echo(f"campaign {report.id} {report.name!r}: {report.status} ({report.purpose})")
    if report.status_reason and report.status == "paused":
        click.echo(f"  paused: {report.status_reason}")
    click.echo(f"  {'deliveries':<24}{report.total:>8}")
    if report.adding_recipients:
        click.echo("    (recipients are still being added; the first batches are sending)")
    for status, count in report.by_status.items():
        click.echo(f"    {status:<22}{count:>8}")
    if report.by_reason:
        click.echo("  skipped or failed, by reason")
        for reason, count in report.by_reason.items():
            click.echo(f"    {reason:<22}{count:>8}")
    fb = report.feedback
    if fb:
        click.echo(
            f"  {'hard bounces':<24}{fb['hard_bounces']:>8}  ({fb['bounce_rate']:.2%} of sent)"
        )
        click.echo(
            f"  {'soft bounces':<24}{fb['soft_bounces']:>8}  ({fb['soft_bounce_rate']:.2%} of sent)"
        )
        click.echo(
            f"  {'complaints':<24}{fb['complaints']:>8}  ({fb['complaint_rate']:.2%} of sent)"
        )


@campaign.command("status")
@click.argument("campaign_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="machine-readable counts")
@click.option("--watch", is_flag=True, help="show a progress bar until the campaign is done")
@click.option(
    "--probe-timeout",
    type=click.FloatRange(0),
    default=2.0,
    show_default=True,
    help="seconds to wait for the broker and the workers to answer (0: do not ask)",
)
@click.option(
    "--verify-counts",
    is_flag=True,
    help="compare the campaign's counters with a count of its delivery rows (exit 1 if not)",
)
@click.option(
    "--repair",
    is_flag=True,
    help="with --verify-counts: recount a campaign that is not sending when they differ",
)
@pass_app
def status(
    app: AppContext,
    campaign_id: int,
    as_json: bool,
    watch: bool,
    probe_timeout: float,
    verify_counts: bool,
    repair: bool,
) -> None:
    """Counts per delivery status and per suppression reason, and what is wrong: task
    errors, and for a scheduled or sending campaign whether a beat, the broker and a worker
    answer. The counts are the campaign's counters; --verify-counts checks them."""
    try:
        with session_scope(app.sessions) as session:
            report = campaign_report(session, campaign_id)
            if watch:
                get_campaign(session, campaign_id)
    except CampaignError as exc:
        raise _fail(exc) from None
    if verify_counts:
        _verify_counts(app, campaign_id, report.status, repair)
    if watch:
        report = _watch(app, campaign_id, report)
    fleet = None
    if probe_timeout and report.status in ("scheduled", "sending"):
        fleet = probe_fleet(app.settings, timeout=probe_timeout)
    with session_scope(app.sessions) as session:
        health = campaign_health(session, app.settings, campaign_id, fleet=fleet)
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "health": health.as_dict()}, indent=2))
    else:
        print_report(report)
        print_health(health)


def _verify_counts(app: AppContext, campaign_id: int, status: str, repair: bool) -> None:
    from dispatcher.campaigns import counts

    with session_scope(app.sessions) as session:
        wrong = counts.verify(session, [campaign_id])
        if wrong and repair:
            if status == "sending":
                raise _fail(CampaignError("pause the campaign before recounting it"))
            get_campaign(session, campaign_id, for_update=True)
            counts.rebuild(session, campaign_id)
    for mismatch in wrong:
        click.echo(str(mismatch), err=True)
    if not wrong:
        click.echo("counters: they match the delivery rows", err=True)
    elif repair:
        click.echo("counters: recounted from the delivery rows", err=True)
    else:
        raise SystemExit(1)


def _watch(app: AppContext, campaign_id: int, report: CampaignReport) -> CampaignReport:
    with click.progressbar(length=max(report.total, 1), label="sending", show_pos=True) as bar:
        done = 0
        while report.status in ("scheduled", "sending") or report.pending:
            time.sleep(0.5)
            with session_scope(app.sessions) as session:
                report = campaign_report(session, campaign_id)
            bar.length = max(report.total, 1)
            bar.update(report.total - report.pending - done)
            done = report.total - report.pending
            if report.status in ("paused", "cancelled", "done") and not report.pending:
                break
    return report


COMMANDS = [campaign]
