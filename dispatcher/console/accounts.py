"""Console pages about staff sessions and one's own account: the open sessions (an admin sees
everyone's and may end any; staff see and end their own), and a password change that ends
the account's other sessions."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers.response import Response as BaseResponse

from dispatcher.console.security import audit, hit, requires, sessions, settings, staff
from dispatcher.console.staff import StaffError, change_password, has_role
from dispatcher.console.staff_sessions import end_session, end_sessions_of, open_sessions
from dispatcher.console.views import bp
from dispatcher.db import session_scope
from dispatcher.models import Staff, StaffRole


def _is_admin() -> bool:
    return has_role(staff().role, StaffRole.ADMIN)


@bp.get("/sessions")
@requires(StaffRole.VIEWER)
def sessions_page() -> str:
    everyone = _is_admin() and request.args.get("mine") != "1"
    with sessions()() as db:
        rows = open_sessions(db, settings().console_idle_seconds, None if everyone else staff().id)
    return render_template("sessions.html", rows=rows, current=g.staff_session, everyone=everyone)


@bp.post("/sessions/<int:session_id>/end")
@requires(StaffRole.VIEWER)
def end_one_session(session_id: int) -> BaseResponse:
    """Sign out one session: any for an admin, one's own for everyone else."""
    only_mine = None if _is_admin() else staff().id
    reason = "ended_by_staff" if only_mine is not None else "ended_by_admin"
    with session_scope(sessions()) as db:
        ended = end_session(db, session_id, reason=reason, by=staff().email, staff_id=only_mine)
    if ended:
        audit("staff_session_ended", session_id=session_id)
        flash("That session is signed out.")
    else:
        audit("staff_session_ended", outcome="not_found", session_id=session_id)
        flash("No such open session of yours.", "error")
    if session_id == g.staff_session and ended:
        return redirect(url_for("console.sign_in"))
    return redirect(url_for("console.sessions_page"))


@bp.post("/sessions/end-others")
@requires(StaffRole.VIEWER)
def end_other_sessions() -> BaseResponse:
    with session_scope(sessions()) as db:
        ended = end_sessions_of(
            db, staff().id, reason="ended_by_staff", by=staff().email, keep=g.staff_session
        )
    audit("staff_sessions_ended", count=ended)
    flash(f"{ended} other session(s) signed out.")
    return redirect(url_for("console.sessions_page"))


@bp.route("/account/password", methods=["GET", "POST"])
@requires(StaffRole.VIEWER)
def account_password() -> Any:
    error = None
    if request.method == "POST":
        form = request.form
        try:
            with session_scope(sessions()) as db:
                who = db.get(Staff, staff().id)
                assert who is not None
                ended = change_password(
                    db,
                    who,
                    form.get("current", "")[:1024],
                    form.get("password", "")[:1024],
                    form.get("confirm", "")[:1024],
                    hit(),
                    keep_session=g.staff_session,
                )
        except StaffError as exc:
            error = str(exc)
            audit("staff_password_changed", outcome="refused", why=error)
        else:
            flash(f"Password changed; {ended} other session(s) signed out.")
            return redirect(url_for("console.sessions_page"))
    return render_template("password.html", error=error), (400 if error else 200)
