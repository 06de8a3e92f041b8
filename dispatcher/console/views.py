"""The console's pages. Each state change is a POST (CSRF-checked in ``security``) that calls
the service the CLI calls, then records the action with the staff member, IP and browser."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import select
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers.response import Response as BaseResponse

from dispatcher.campaigns import counts as campaign_counts
from dispatcher.campaigns.fleet import start_due_now
from dispatcher.campaigns.health import campaign_health, campaigns_in_trouble
from dispatcher.campaigns.services import (
    CampaignError,
    add_content_version,
    campaign_report,
    cancel_campaign,
    create_campaign,
    get_campaign,
    pause_campaign,
    requeue_unknown,
    resume_campaign,
    schedule_campaign,
)
from dispatcher.console import charts
from dispatcher.console.campaigns import (
    audience_counts,
    failures,
    progress,
    render_for,
    sample_or_contact,
    send_test,
    sends_over_time,
)
from dispatcher.console.security import (
    actor,
    audit,
    hit,
    requires,
    sessions,
    settings,
    staff,
)
from dispatcher.console.staff import SignInRefused, StaffError, read_password_link, set_password
from dispatcher.console.staff import sign_in as check_sign_in
from dispatcher.console.staff_sessions import end_session, open_session
from dispatcher.db import session_scope
from dispatcher.inbound.rates import (
    breaches,
    campaigns_rates,
    over_threshold,
    paused_for_rates,
)
from dispatcher.models import Campaign, CampaignContent, StaffRole
from dispatcher.sending.messages import build_message
from dispatcher.sending.rendering import TemplateProblem, list_layouts
from dispatcher.sending.staff_text import STAFF_VARIABLES, StaffContent
from dispatcher.sending.transports import SendError
from suppression.models import utcnow
from suppression.tokens import BadToken

bp = Blueprint("console", __name__)

ACTIONS = {
    "pause": ("Pause", "No new batch is taken; the batch in flight finishes."),
    "resume": ("Resume", "The campaign is scheduled again, now; the beat sends what is left."),
    "cancel": ("Cancel", "Queued messages are dropped; this cannot be undone."),
    "resend-unknown": (
        "Resend unknown",
        "Messages whose outcome a crash hid are queued again; the gate is applied again.",
    ),
}


def install_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _error(exc: HTTPException) -> tuple[str, int]:
        code = exc.code or 500
        return render_template("error.html", code=code, title=exc.name, text=exc.description), code


# --- signing in ----------------------------------------------------------------------------


@bp.get("/")
def home() -> BaseResponse:
    return redirect(url_for("console.campaigns"))


def _own_page(target: str) -> str:
    """``target`` if it is a path of this console, else the campaign list: a sign-in link
    must not send staff on to another site. Browsers drop tabs and line breaks from a URL
    (``/<tab>/evil.example`` is ``//evil.example`` to them) and read a backslash as a
    slash, so any of them refuses the target."""
    if (
        not target.startswith("/")
        or any(c.isspace() or not c.isprintable() or c == "\\" for c in target)
        or target.startswith("//")
        or urlsplit(target).netloc
    ):
        return url_for("console.campaigns")
    return target


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    error = None
    if request.method == "POST":
        address = request.form.get("email", "")[:320]
        password = request.form.get("password", "")[:1024]
        # The refusal is committed too: the failure counter and the audit record stay.
        key: str | None = None
        with session_scope(sessions()) as db:
            try:
                key = open_session(db, check_sign_in(db, address, password, hit()), hit())
            except SignInRefused as exc:
                error = exc
        if error is None and key is not None:
            session.clear()
            session["sid"] = key
            return redirect(_own_page(request.args.get("next", "")))
        code = 429 if error and error.outcome == "throttled" else 401
        return render_template("sign_in.html", error=str(error)), code
    return render_template("sign_in.html", error=error)


@bp.post("/sign-out")
def sign_out() -> BaseResponse:
    if g.get("staff_session") is not None:
        with session_scope(sessions()) as db:
            end_session(db, g.staff_session, reason="signed_out", by=actor())
        audit("staff_sign_out")
    session.clear()
    return redirect(url_for("console.sign_in"))


@bp.route("/set-password/<token>", methods=["GET", "POST"])
def set_password_page(token: str) -> Any:
    with session_scope(sessions()) as db:
        try:
            who = read_password_link(db, settings(), token)
        except BadToken as exc:
            audit("staff_password_set", outcome="bad_link")
            return render_template(
                "error.html", code=400, title="Link not valid", text=str(exc)
            ), 400
        if request.method == "GET":
            return render_template("set_password.html", email=who.email, error=None)
        try:
            set_password(
                db,
                who,
                request.form.get("password", ""),
                request.form.get("confirm", ""),
                hit(),
            )
        except StaffError as exc:
            return render_template("set_password.html", email=who.email, error=str(exc)), 400
    flash("Your password is set; sign in with it.")
    return redirect(url_for("console.sign_in"))


# --- campaigns -----------------------------------------------------------------------------


@bp.get("/campaigns")
@requires(StaffRole.VIEWER)
def campaigns() -> str:
    with sessions()() as db:
        rows = list(db.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(500)))
        ids = [c.id for c in rows]
        counts = {
            campaign_id: found.by_status
            for campaign_id, found in campaign_counts.current(db, ids).items()
        }
        trouble = campaigns_in_trouble(db, settings())
        rates = campaigns_rates(db, ids)
    # A short marker for a campaign paused for its rates, or past a pause threshold now.
    over = {}
    for c in rows:
        marks = [b.short for b in breaches(rates[c.id], settings())]
        if paused_for_rates(c.status, c.status_reason):
            marks.insert(0, "paused for its rates")
        over[c.id] = "; ".join(marks)
    return render_template(
        "campaigns.html",
        campaigns=rows,
        counts=counts,
        trouble=trouble,
        rates=rates,
        over={k: v for k, v in over.items() if v},
    )


def _content_from_form(layouts: list[str]) -> StaffContent:
    form = request.form
    layout = form.get("layout", "")
    if layout not in layouts:
        raise CampaignError(f"choose a layout: {', '.join(layouts)}")
    body_format = form.get("body_format", "html")
    if body_format not in ("html", "markdown"):
        raise CampaignError("the body format is html or markdown")
    text = form.get("body_text", "").replace("\r\n", "\n")
    return StaffContent(
        version=0,
        subject=form.get("subject", "").strip(),
        preheader=form.get("preheader", "").strip(),
        body_format=body_format,
        body=form.get("body", "").replace("\r\n", "\n"),
        body_text=text if text.strip() else None,
        layout=layout,
    )


@bp.route("/campaigns/new", methods=["GET", "POST"])
@requires(StaffRole.EDITOR)
def new_campaign() -> Any:
    config = settings()
    layouts = list_layouts(config)
    form: dict[str, Any] = {"layout": layouts[0] if layouts else "", "body_format": "html"}
    error = None
    if request.method == "POST":
        form = dict(request.form)
        try:
            content = _content_from_form(layouts)
            with session_scope(sessions()) as db:
                row = create_campaign(
                    db,
                    config,
                    name=request.form.get("name", ""),
                    subject=content.subject,
                    template=content.layout,
                    purpose=request.form.get("purpose", "marketing"),
                    audience=request.form.get("audience", "").strip() or None,
                    actor=actor(),
                    content=content,
                )
                campaign_id = row.id
        except CampaignError as exc:
            error = str(exc)
            audit("campaign_create", outcome="refused", why=error[:300])
        else:
            audit("campaign_create", campaign_id=campaign_id)
            return redirect(url_for("console.campaign", campaign_id=campaign_id))
    return render_template(
        "edit.html",
        campaign=None,
        form=form,
        layouts=layouts,
        error=error,
        variables=STAFF_VARIABLES,
    ), (400 if error else 200)


@bp.route("/campaigns/<int:campaign_id>/edit", methods=["GET", "POST"])
@requires(StaffRole.EDITOR)
def edit_campaign(campaign_id: int) -> Any:
    config = settings()
    layouts = list_layouts(config)
    error = None
    with sessions()() as db:
        campaign = _campaign_or_404(db, campaign_id)
        content = campaign.content
        form: dict[str, Any] = {
            "name": campaign.name,
            "purpose": campaign.purpose,
            "audience": campaign.audience or "",
            "subject": content.subject if content else campaign.subject,
            "preheader": content.preheader if content else "",
            "body_format": content.body_format if content else "html",
            "body": content.body if content else "",
            "body_text": (content.body_text or "") if content else "",
            "layout": content.layout if content else (layouts[0] if layouts else ""),
        }
    if request.method == "POST":
        form.update(request.form)
        try:
            staff_content = _content_from_form(layouts)
            with session_scope(sessions()) as db:
                row = get_campaign(db, campaign_id, for_update=True)
                version = add_content_version(db, row, staff_content, actor=actor())
                # Refuse, and keep nothing, when the new version cannot be sent.
                from dispatcher.campaigns.services import campaign_view
                from dispatcher.sending.rendering import check_campaign

                try:
                    check_campaign(config, campaign_view(row))
                except TemplateProblem as exc:
                    raise CampaignError(str(exc)) from None
                saved = version.version
        except CampaignError as exc:
            error = str(exc)
            audit("campaign_edit", outcome="refused", campaign_id=campaign_id, why=error[:300])
        else:
            audit("campaign_edit", campaign_id=campaign_id, version=saved)
            flash(f"Saved as version {saved}.")
            return redirect(url_for("console.campaign", campaign_id=campaign_id))
    return render_template(
        "edit.html",
        campaign=campaign,
        form=form,
        layouts=layouts,
        error=error,
        variables=STAFF_VARIABLES,
    ), (400 if error else 200)


def _campaign_or_404(db: Any, campaign_id: int) -> Campaign:
    campaign = db.get(Campaign, campaign_id)
    if campaign is None:
        abort(404, f"No campaign with id {campaign_id}.")
    return campaign


@bp.get("/campaigns/<int:campaign_id>")
@requires(StaffRole.VIEWER)
def campaign(campaign_id: int) -> str:
    with sessions()() as db:
        row = _campaign_or_404(db, campaign_id)
        report = campaign_report(db, campaign_id)
        state = progress(db, campaign_id, report)
        gate = None
        if row.status in ("draft", "scheduled"):
            # Before fan-out: the gate's answer now. After it, the report below shows what
            # the gate decided for each message (and a gate over every contact is costly).
            try:
                gate = audience_counts(db, row.purpose, row.audience)
            except CampaignError:
                gate = None
        versions = list(
            db.execute(
                select(
                    CampaignContent.version,
                    CampaignContent.created_at,
                    CampaignContent.id,
                    CampaignContent.created_by,
                )
                .where(CampaignContent.campaign_id == campaign_id)
                .order_by(CampaignContent.version.desc())
            )
        )
        over_time = sends_over_time(db, campaign_id)
        failed = failures(db, campaign_id)
        # What `campaign status` says is wrong, from the database alone (the page must not
        # wait on a broker probe): task errors, overdue, beat or workers not seen.
        health = (
            campaign_health(db, settings(), campaign_id)
            if row.status in ("scheduled", "sending", "paused")
            else None
        )
    tz = _zone()
    return render_template(
        "campaign.html",
        campaign=row,
        health=health,
        report=report,
        paused_for_rates=paused_for_rates(row.status, row.status_reason),
        limits=settings(),
        over_threshold=over_threshold(report.rates, settings()),
        state=state,
        gate=gate,
        versions=versions,
        tz=tz,
        actions=ACTIONS,
        charts={
            "outcomes": charts.bars(
                [(k, v) for k, v in report.by_status.items() if v], "Deliveries by status"
            ),
            "reasons": charts.bars(list(report.by_reason.items()), "Skipped by reason"),
            "time": charts.bars(over_time, "Messages sent per minute (UTC)"),
            "failures": charts.bars(failed, "Failures by error"),
        },
        local=lambda when: _local(when, tz),
    )


@bp.get("/campaigns/<int:campaign_id>/progress.json")
@requires(StaffRole.VIEWER)
def campaign_progress(campaign_id: int) -> Response:
    with sessions()() as db:
        _campaign_or_404(db, campaign_id)
        return jsonify(progress(db, campaign_id))


@bp.get("/audience.json")
@requires(StaffRole.VIEWER)
def audience_json() -> Any:
    """The gate's answer for an audience typed in the editor, as it stands now."""
    with sessions()() as db:
        try:
            counts = audience_counts(
                db, request.args.get("purpose", "marketing"), request.args.get("audience", "")
            )
        except CampaignError as exc:
            return jsonify(error=str(exc)), 400
    return jsonify(matched=counts.matched, eligible=counts.eligible, skipped=counts.skipped)


def _preview(campaign_id: int, to: str | None) -> tuple[Campaign, Any, bytes]:
    with sessions()() as db:
        row = _campaign_or_404(db, campaign_id)
        first, last, _ = sample_or_contact(db, to)
        db.expunge(row)
    factory, rendered = render_for(settings(), row, first, last)
    unsubscribe, _ = factory.links(0)
    message = build_message(
        rendered,
        sender=settings().sender,
        to_address=to or "sample@example.com",
        to_name=" ".join(p for p in (first, last) if p) or None,
        message_id=f"<preview.{campaign_id}@{factory.sender_domain}>",
        list_unsubscribe_url=unsubscribe if factory.marketing else None,
        unsubscribe_mailto=settings().unsubscribe_mailto if factory.marketing else None,
    )
    return row, rendered, message


@bp.get("/campaigns/<int:campaign_id>/preview")
@requires(StaffRole.VIEWER)
def preview(campaign_id: int) -> Any:
    to = request.args.get("to", "").strip() or None
    if to and not has_personal_access():
        to = None
    try:
        row, rendered, message = _preview(campaign_id, to)
    except (TemplateProblem, CampaignError) as exc:
        return render_template(
            "preview.html", campaign=None, campaign_id=campaign_id, error=str(exc), to=to
        ), 400
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    headers = [(k, str(v)) for k, v in parsed.items()]
    return render_template(
        "preview.html",
        campaign=row,
        campaign_id=campaign_id,
        rendered=rendered,
        headers=headers,
        to=to,
        error=None,
    )


def has_personal_access() -> bool:
    from dispatcher.console.staff import has_role

    return has_role(staff().role, StaffRole.EDITOR)


@bp.get("/campaigns/<int:campaign_id>/preview.html")
@requires(StaffRole.VIEWER)
def preview_html(campaign_id: int) -> Response:
    to = request.args.get("to", "").strip() or None
    if to and not has_personal_access():
        to = None
    try:
        _, rendered, _ = _preview(campaign_id, to)
    except (TemplateProblem, CampaignError) as exc:
        abort(400, str(exc))
    response = Response(rendered.html, mimetype="text/html")
    # Shown in a sandboxed iframe: no script, no form, no network beyond inline styles.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
    )
    return response


@bp.post("/campaigns/<int:campaign_id>/test")
@requires(StaffRole.EDITOR)
def test_send(campaign_id: int) -> BaseResponse:
    try:
        with sessions()() as db:
            subject = send_test(db, settings(), campaign_id, staff().email)
    except (TemplateProblem, CampaignError, SendError) as exc:
        audit("campaign_test_sent", outcome="failed", campaign_id=campaign_id, why=str(exc)[:300])
        flash(f"The test was not sent: {exc}", "error")
    else:
        audit("campaign_test_sent", campaign_id=campaign_id)
        flash(f"Test sent to {staff().email}: {subject}")
    return redirect(url_for("console.campaign", campaign_id=campaign_id))


def _zone() -> ZoneInfo:
    name = request.values.get("tz") or session.get("tz") or staff().time_zone or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _local(when: datetime | None, tz: ZoneInfo) -> str:
    if when is None:
        return "—"
    local = when.astimezone(tz)
    utc = when.astimezone(ZoneInfo("UTC"))
    if tz.key == "UTC":
        return f"{utc:%Y-%m-%d %H:%M} UTC"
    return f"{local:%Y-%m-%d %H:%M} {tz.key} ({utc:%Y-%m-%d %H:%M} UTC)"


@bp.post("/campaigns/<int:campaign_id>/schedule")
@requires(StaffRole.EDITOR)
def schedule(campaign_id: int) -> BaseResponse:
    form = request.form
    at: datetime | None = None
    try:
        if form.get("when") == "later":
            try:
                zone = ZoneInfo(form.get("tz", "UTC"))
            except (ZoneInfoNotFoundError, ValueError):
                raise CampaignError(f"unknown time zone {form.get('tz')!r}") from None
            try:
                naive = datetime.fromisoformat(f"{form.get('date', '')}T{form.get('time', '')}")
            except ValueError:
                raise CampaignError("give a date and a time to schedule for later") from None
            at = naive.replace(tzinfo=zone)
            session["tz"] = zone.key
        with session_scope(sessions()) as db:
            row = schedule_campaign(db, settings(), campaign_id, at=at, actor=actor())
            when = row.scheduled_at
    except CampaignError as exc:
        audit("campaign_schedule", outcome="refused", campaign_id=campaign_id, why=str(exc)[:300])
        flash(str(exc), "error")
    else:
        audit("campaign_schedule", campaign_id=campaign_id, at=when.isoformat() if when else None)
        if when is not None and when <= utcnow():
            start_due_now(settings())  # committed: a worker may start it now
        flash(f"Scheduled for {_local(when, _zone())}.")
    return redirect(url_for("console.campaign", campaign_id=campaign_id))


@bp.route(
    "/campaigns/<int:campaign_id>/<any(pause,resume,cancel,'resend-unknown'):action>",
    methods=["GET", "POST"],
)
@requires(StaffRole.EDITOR)
def control(campaign_id: int, action: str) -> Any:
    """GET: the confirmation step (changes nothing). POST: do it."""
    with sessions()() as db:
        row = _campaign_or_404(db, campaign_id)
    if request.method == "GET":
        title, text = ACTIONS[action]
        return render_template("confirm.html", campaign=row, action=action, title=title, text=text)
    operations = {
        "pause": pause_campaign,
        "resume": resume_campaign,
        "cancel": cancel_campaign,
        "resend-unknown": requeue_unknown,
    }
    try:
        with session_scope(sessions()) as db:
            result = operations[action](db, campaign_id, actor=actor())
    except CampaignError as exc:
        audit(f"campaign_{action}", outcome="refused", campaign_id=campaign_id, why=str(exc))
        flash(str(exc), "error")
    else:
        audit(f"campaign_{action}", campaign_id=campaign_id, count=result)
        flash(f"{ACTIONS[action][0]}: done." + (f" ({result} messages)" if result else ""))
    return redirect(url_for("console.campaign", campaign_id=campaign_id))


from dispatcher.console import accounts, people  # noqa: E402,F401  (registers the remaining pages)
