"""Console pages about people and lists: person lookup, suppressions, contacts import,
affiliates, statistics, the security audit log, staff accounts. Each calls the service the
CLI calls."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, abort, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select, text
from werkzeug.wrappers.response import Response as BaseResponse

from dispatcher.console import charts
from dispatcher.console.imports import read_job, start_import
from dispatcher.console.security import actor, audit, hit, requires, sessions, settings, staff
from dispatcher.console.staff import has_role, list_staff
from dispatcher.console.views import bp
from dispatcher.contacts.suppress import ERASED_ANSWER, lift_address, suppress_address
from dispatcher.db import session_scope
from dispatcher.models import Affiliate, Campaign, Contact, Delivery, StaffRole
from dispatcher.privacy.access import PersonNotFound, person_record
from dispatcher.sharing.affiliates import AffiliateError, add_affiliate, disable_affiliate
from dispatcher.sharing.export import export
from dispatcher.sharing.stats import report as stats_report
from suppression.address import InvalidAddress, canonical_address
from suppression.consent import consent_history
from suppression.models import STAFF_EVENTS, Address, Event, Reason, Suppression
from suppression.suppressions import SuppressionError, page_suppressions
from suppression.tokens import TokenSigner

PAGE = 100  # rows per page of the suppressions and audit lists


@bp.get("/people")
@requires(StaffRole.EDITOR)
def person() -> Any:
    query = request.args.get("address", "").strip()
    found: dict[str, Any] | None = None
    error = None
    if query:
        try:
            canonical = canonical_address(query)
        except InvalidAddress as exc:
            error = f"{query!r} is not an e-mail address: {exc}"
            canonical = None
        if canonical:
            with sessions()() as db:
                address = db.scalar(select(Address).where(Address.address == canonical))
                if address is not None:
                    found = {
                        "address": address,
                        "contact": db.scalar(
                            select(Contact).where(Contact.address_id == address.id)
                        ),
                        "consents": consent_history(db, address.id),
                        "suppressions": list(
                            db.scalars(
                                select(Suppression)
                                .where(Suppression.address_id == address.id)
                                .order_by(Suppression.id.desc())
                            )
                        ),
                        "deliveries": list(
                            db.execute(
                                select(Delivery, Campaign.name)
                                .join(Campaign, Campaign.id == Delivery.campaign_id)
                                .where(Delivery.address_id == address.id)
                                .order_by(Delivery.id.desc())
                                .limit(200)
                            )
                        ),
                        "hits": list(
                            db.scalars(
                                select(Event)
                                .where(Event.address_id == address.id)
                                .order_by(Event.id.desc())
                                .limit(200)
                            )
                        ),
                    }
            audit("console_person_lookup", found=found is not None)
    return render_template("person.html", query=query, found=found, error=error)


@bp.post("/people/lift")
@requires(StaffRole.ADMIN)
def lift() -> BaseResponse:
    address = request.form.get("address", "")
    why = request.form.get("reason", "")
    only = request.form.get("only") or None
    try:
        with session_scope(sessions()) as db:
            count = lift_address(db, address, why=why, actor=actor(), only=only)
    except (SuppressionError, InvalidAddress) as exc:
        audit("console_suppression_lift", outcome="refused", why=str(exc)[:300])
        flash(str(exc), "error")
    else:
        audit("console_suppression_lift", count=count)
        flash(f"Lifted {count} suppression(s).")
    return redirect(url_for("console.person", address=address))


@bp.post("/people/export")
@requires(StaffRole.ADMIN)
def person_export() -> Any:
    """A person's access request: everything held about them, as the CLI's ``person export``
    writes it (audited there as ``person_exported``, with the admin's name)."""
    address = request.form.get("address", "")
    try:
        with session_scope(sessions()) as db:
            doc = person_record(db, address, actor=actor())
    except (InvalidAddress, PersonNotFound) as exc:
        flash(str(exc), "error")
        return redirect(url_for("console.person", address=address))
    body = json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return Response(
        body,
        mimetype="application/json",
        headers={
            "Content-Disposition": 'attachment; filename="person.json"',
            "Cache-Control": "no-store",
        },
    )


@bp.route("/suppressions", methods=["GET", "POST"])
@requires(StaffRole.EDITOR)
def suppressions() -> Any:
    if request.method == "POST":
        form = request.form
        try:
            with session_scope(sessions()) as db:
                added = suppress_address(
                    db,
                    form.get("address", ""),
                    reason=form.get("reason", ""),
                    scope=form.get("scope") or None,
                    note=form.get("note") or None,
                    actor=actor(),
                    signer=TokenSigner(settings().secret_keys),
                )
        except (SuppressionError, InvalidAddress) as exc:
            audit("console_suppression_add", outcome="refused", why=str(exc)[:300])
            flash(str(exc), "error")
        else:
            if added.erased:
                audit("console_suppression_add", outcome="erased", reason=form.get("reason"))
                flash(ERASED_ANSWER[0].upper() + ERASED_ANSWER[1:] + ".")
            else:
                audit("console_suppression_add", reason=form.get("reason"))
                flash("Suppressed.")
        return redirect(url_for("console.suppressions"))
    reason = request.args.get("reason") or None
    scope = (request.args.get("scope") or "").strip() or None
    everything = request.args.get("all") == "1"
    before = _before()
    with sessions()() as db:
        rows, next_before = page_suppressions(
            db,
            reason=reason,
            scope=scope,
            include_lifted=everything,
            before_id=before,
            limit=PAGE,
        )
        affiliates = list(db.scalars(select(Affiliate).order_by(Affiliate.name)))
    return render_template(
        "suppressions.html",
        rows=rows,
        reasons=[r.value for r in Reason],
        affiliates=affiliates,
        reason=reason,
        scope=scope,
        everything=everything,
        next_url=url_for(
            "console.suppressions",
            reason=reason or "",
            scope=scope or "",
            all="1" if everything else "",
            before=next_before,
        )
        if next_before
        else None,
        first_url=url_for(
            "console.suppressions",
            reason=reason or "",
            scope=scope or "",
            all="1" if everything else "",
        )
        if before
        else None,
    )


@bp.route("/contacts/import", methods=["GET", "POST"])
@requires(StaffRole.EDITOR)
def contacts_import() -> Any:
    """Upload a CSV; it is imported in the background and the job's page shows progress,
    then the per-row report."""
    if request.method == "POST":
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            flash("Choose a CSV file.", "error")
            return redirect(url_for("console.contacts_import"))
        job = start_import(
            settings(),
            sessions(),
            upload,
            upload.filename,
            staff_id=staff().id,
            actor=actor(),
            hit=hit(),
        )
        return redirect(url_for("console.contacts_import_job", job=job))
    return render_template("contacts.html", job=None, state=None)


def _job_or_404(job: str) -> dict[str, Any]:
    state = read_job(settings(), job)
    if state is None or (
        state.get("staff") != staff().id and not has_role(staff().role, StaffRole.ADMIN)
    ):
        abort(404, "No such import.")
    return state


@bp.get("/contacts/import/<job>")
@requires(StaffRole.EDITOR)
def contacts_import_job(job: str) -> str:
    return render_template("contacts.html", job=job, state=_job_or_404(job))


@bp.get("/contacts/import/<job>.json")
@requires(StaffRole.EDITOR)
def contacts_import_progress(job: str) -> Response:
    state = dict(_job_or_404(job))
    state.pop("staff", None)
    return jsonify(state)


@bp.route("/affiliates", methods=["GET", "POST"])
@requires(StaffRole.ADMIN)
def affiliates() -> Any:
    credential = None
    exported = None
    if request.method == "POST":
        form = request.form
        try:
            if form.get("action") == "export":
                exported = export(sessions(), settings(), form.get("name", ""), actor=actor())
            elif form.get("action") == "disable":
                with session_scope(sessions()) as db:
                    disable_affiliate(db, form.get("name", ""), actor=actor())
                flash(f"Disabled {form.get('name')}.")
            else:
                with session_scope(sessions()) as db:
                    _, credential = add_affiliate(
                        db,
                        form.get("name", ""),
                        contact=form.get("contact", ""),
                        fields=form.get("fields", ""),
                        actor=actor(),
                    )
        except AffiliateError as exc:
            audit("console_affiliate", outcome="refused", why=str(exc)[:300])
            flash(str(exc), "error")
        else:
            audit("console_affiliate", action=form.get("action", "add"), name=form.get("name"))
    with sessions()() as db:
        rows = list(db.scalars(select(Affiliate).order_by(Affiliate.name)))
    return render_template(
        "affiliates.html",
        rows=rows,
        credential=credential,
        exported=exported,
        link_days=settings().affiliate_link_seconds / 86400,
    )


@bp.get("/stats")
@requires(StaffRole.VIEWER)
def stats() -> str:
    with sessions()() as db:
        data = stats_report(db, settings().stats_min_cell)
    summary = data["summary"]
    chart = charts.bars(
        [
            (str(k), int(v))
            for k, v in summary.items()
            if isinstance(v, int) and not isinstance(v, bool) and k != "min_cell"
        ],
        "Summary (counts under k withheld)",
    )
    return render_template("stats.html", data=data, chart=chart)


@bp.get("/audit")
@requires(StaffRole.ADMIN)
def audit_log() -> str:
    kind = (request.args.get("kind") or "").strip() or None
    who = (request.args.get("actor") or "").strip() or None
    before = _before()
    with sessions()() as db:
        # Staff sign-ins, actions and refusals: whatever a staff member did or was refused.
        # The predicate's very text is the partial index's (ix_events_staff); a kind or a
        # staff member walks (kind, id) or (actor, id); pages are keyset (id < before).
        stmt = select(Event).where(text(STAFF_EVENTS))
        if kind:
            stmt = stmt.where(Event.kind == kind)
        if who:
            stmt = stmt.where(Event.actor == who)
        if before is not None:
            stmt = stmt.where(Event.id < before)
        rows = list(db.scalars(stmt.order_by(Event.id.desc()).limit(PAGE + 1)))
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    args: dict[str, Any] = {"kind": kind or "", "actor": who or ""}
    return render_template(
        "audit.html",
        rows=rows,
        kind=kind,
        actor=who,
        next_url=url_for("console.audit_log", **args, before=rows[-1].id) if more else None,
        first_url=url_for("console.audit_log", **args) if before else None,
    )


def _before() -> int | None:
    """The keyset cursor of a list page: rows with a smaller id than this."""
    value = request.args.get("before", "")
    return int(value) if value.isdigit() and len(value) < 19 else None


@bp.get("/staff")
@requires(StaffRole.ADMIN)
def staff_list() -> str:
    with sessions()() as db:
        rows = list_staff(db)
    return render_template("staff.html", rows=rows)


__all__ = ["hit"]
