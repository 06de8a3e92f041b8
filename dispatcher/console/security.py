"""The console's guard: signed session cookie, CSRF on every POST, roles, audit, headers.

The session is a cookie signed by :class:`suppression.tokens.TokenSigner` (the project's one
signer, with its own salt) and re-signed on every response, so it ends after
``console_idle_seconds`` without a request. HttpOnly, SameSite=Strict, and Secure when the
console's URL is https. Every refusal (403 for a role, 400 for a missing CSRF token) is
recorded in the audit trail with the staff member, IP and browser.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Request, Response, abort, current_app, g, request, session
from flask.sessions import SecureCookieSession, SessionInterface
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.console.staff import has_role
from dispatcher.console.staff_sessions import due, resume, seen
from dispatcher.db import read_only, session_scope
from dispatcher.models import Staff, StaffRole
from dispatcher.settings import Settings
from suppression.events import Hit, record_event
from suppression.tokens import BadToken, LinkPurpose, TokenSigner

log = logging.getLogger(__name__)

COOKIE = "console_session"
MAX_BODY_BYTES = 8 * 1024 * 1024  # a contacts CSV upload

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Cache-Control": "no-store",
}

F = TypeVar("F", bound=Callable[..., Any])


class SignedSessionInterface(SessionInterface):
    """Flask sessions as TokenSigner timed tokens: the idle timeout is the token's max age."""

    def __init__(self, settings: Settings) -> None:
        self.signer = TokenSigner(settings.secret_keys)
        self.idle = int(settings.console_idle_seconds)
        self.secure = settings.console_url.startswith("https://")

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession:
        token = request.cookies.get(COOKIE)
        if not token:
            return SecureCookieSession()
        try:
            data = self.signer.read_timed(LinkPurpose.CONSOLE_SESSION, token, self.idle)
        except BadToken:
            return SecureCookieSession()
        return SecureCookieSession(data)

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        if not session:
            if request.cookies.get(COOKIE):
                response.delete_cookie(COOKIE, path="/", samesite="Strict", secure=self.secure)
            return
        token = self.signer.sign_timed(LinkPurpose.CONSOLE_SESSION, dict(session))
        response.set_cookie(
            COOKIE,
            token,
            max_age=self.idle,
            path="/",
            httponly=True,
            secure=self.secure,
            samesite="Strict",
        )


def sessions() -> sessionmaker[Session]:
    factory: sessionmaker[Session] = current_app.extensions["dispatcher.sessions"]
    return factory


def settings() -> Settings:
    value: Settings = current_app.config["DISPATCHER_SETTINGS"]
    return value


def hit() -> Hit:
    return Hit(
        ip=request.remote_addr,
        user_agent=request.headers.get("User-Agent", "")[:512],
        source="console",
    )


def staff() -> Staff:
    """The signed-in staff member (views behind ``requires`` only)."""
    found: Staff = g.staff
    return found


def actor() -> str:
    return staff().email


def audit(kind: str, *, outcome: str = "ok", **detail: Any) -> None:
    """Record a console action or refusal in its own transaction (it stays if the view fails)."""
    who = g.get("staff")
    try:
        with session_scope(sessions()) as db:
            record_event(
                db,
                kind,
                actor=who.email if who is not None else None,
                hit=hit(),
                outcome=outcome,
                # The route, not the path: a set-password token or an address stays out.
                path=request.url_rule.rule if request.url_rule else request.path[:64],
                method=request.method,
                **detail,
            )
    except Exception:  # noqa: BLE001 - the refusal or action stands; say it was not recorded
        log.warning("could not record console event %s", kind, exc_info=True)


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        session["csrf"] = token
    return token


def requires(role: StaffRole) -> Callable[[F], F]:
    """The view needs a signed-in staff member with ``role`` or above; else 403, recorded."""

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            who = g.get("staff")
            if who is None:
                from flask import redirect, url_for

                return redirect(url_for("console.sign_in", next=request.path))
            if not has_role(who.role, role):
                audit("console_refused", outcome="403", needed=role.value, role=who.role)
                abort(403)
            return view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate


def install(app: Flask, config: Settings, trusted_proxies: int = 0) -> None:
    app.session_interface = SignedSessionInterface(config)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    if trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=trusted_proxies, x_proto=trusted_proxies
        )

    @app.before_request
    def _load_staff() -> None:
        g.staff = None
        g.staff_session = None
        key = session.get("sid")
        if isinstance(key, str):
            # The row decides: an ended session, an idle one or a disabled account is out.
            # Read without waiting on SQLite's write lock (a long import holds it); the
            # last-seen note is written once a minute.
            with read_only(sessions()) as db:
                found = resume(db, key, config.console_idle_seconds)
                if found is not None:
                    row, who = found
                    row_id, touch = row.id, due(row)
                    db.expunge(who)
            if found is None:
                session.clear()
                return
            g.staff_session, g.staff = row_id, who
            if touch:
                with session_scope(sessions()) as db:
                    seen(db, row_id, hit())
        elif session.get("staff") is not None:
            session.clear()  # a cookie from before sessions were kept in the database

    @app.before_request
    def _check_csrf() -> None:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return
        sent = request.form.get("csrf_token", "")
        expected = session.get("csrf")
        if not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
            audit("console_refused", outcome="400", why="csrf")
            abort(400, "The form's security token is missing or stale; reload the page.")

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.template_filter("utc")
    def _utc(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""

    @app.context_processor
    def _template_globals() -> dict[str, Any]:
        return {"csrf_token": csrf_token, "me": g.get("staff"), "has_role": has_role}
