"""The public forms: subscribe (double opt-in), its confirmation, and "send me my
preferences link". Each POST answers the same page whatever the address, and the mail it
decides leaves after the answer, so neither the page nor its timing tells whether an
address is known. Every hit is recorded in the audit trail."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, after_this_request, current_app, render_template, request
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.settings import Settings
from dispatcher.signup.mail import OutgoingMail
from dispatcher.signup.services import (
    SignupError,
    SignupForm,
    confirm_signup,
    deliver,
    ip_allowed,
    pending_signup,
    request_preferences_link,
    request_signup,
)
from dispatcher.web.security import client_hit, form_token, form_token_ok
from suppression.address import mask_address
from suppression.events import record_event
from suppression.tokens import BadToken, LinkPurpose, TokenOutcome, TokenSigner
from suppression.unsubscribe import CannotResubscribe

bp = Blueprint("signup", __name__)

FORM_MAX_AGE = 6 * 3600
HONEYPOT = "comment"
MAX_FIELD = 200
MAX_EMAIL = 320
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _settings() -> Settings:
    settings = current_app.config["DISPATCHER_SETTINGS"]
    assert isinstance(settings, Settings)
    return settings


def _sessions() -> sessionmaker[Session]:
    sessions = current_app.extensions["dispatcher.sessions"]
    assert isinstance(sessions, sessionmaker)
    return sessions


def _signer() -> TokenSigner:
    return TokenSigner(_settings().secret_keys)


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _record(session: Session, route: str, action: str, outcome: str = "not_checked") -> None:
    record_event(
        session,
        "web_hit",
        hit=client_hit(),
        outcome=outcome,
        route=route,
        action=action,
        method=request.method,
    )


def _send_after_answer(mail: OutgoingMail | None) -> None:
    if mail is None:
        return
    settings, sessions = _settings(), _sessions()

    @after_this_request
    def _later(response: Response) -> Response:
        response.call_on_close(lambda: deliver(settings, sessions, mail))
        return response


def _too_many(session: Session, route: str) -> tuple[str, int, dict[str, str]]:
    _record(session, route, "ip_limited", "refused")
    seconds = int(_settings().signup_ip_window_seconds)
    minutes = max(1, round(seconds / 60))
    wait = f"{minutes} minutes" if minutes < 120 else f"{round(minutes / 60)} hours"
    page = render_template("too_many.html", settings=_settings(), wait=wait)
    return page, 429, {"Retry-After": str(seconds)}


def _screen(
    session: Session, route: str, kind: str, again: Callable[[str], tuple[str, int]]
) -> Any | None:
    """What both public forms check before reading what was typed: the IP's limit, the
    honeypot (answered as a success, so a bot learns nothing), and our own form token.
    Returns the early answer, or None to go on."""
    if not ip_allowed(session, _settings(), client_hit().ip):
        return _too_many(session, route)
    if request.form.get(HONEYPOT):
        _record(session, route, "honeypot", "refused")
        return _sent(kind)
    csrf = request.form.get("csrf", "")
    if not form_token_ok(_settings().secret_keys, csrf, kind, FORM_MAX_AGE):
        _record(session, route, "refused_form_token", "refused")
        return again("This form was open for too long. Please check it and send it again.")
    return None


# --- subscribe --------------------------------------------------------------------------------


def _subscribe_form(
    values: dict[str, Any] | None = None, error: str | None = None, status: int = 200
) -> tuple[str, int]:
    settings = _settings()
    return render_template(
        "subscribe.html",
        settings=settings,
        fields=[(name, _label(name)) for name in settings.signup_fields],
        values=values or {},
        error=error,
        csrf=form_token(settings.secret_keys, "subscribe"),
        honeypot=HONEYPOT,
    ), status


def _text(name: str, limit: int = MAX_FIELD) -> str | None:
    value = (request.form.get(name) or "").strip()
    if len(value) > limit:
        raise SignupError(name, f"{_label(name)} is longer than {limit} characters")
    if _CONTROL.search(value):
        raise SignupError(name, f"{_label(name)} contains a line break or control character")
    return value or None


def _parse_signup() -> SignupForm:
    settings = _settings()
    email = _text("email", MAX_EMAIL)
    if email is None:
        raise SignupError("email", "enter your e-mail address")
    extra = {name: _text(name) for name in settings.signup_fields}
    attributes = {
        k: v for k, v in extra.items() if k not in ("first_name", "last_name") and v is not None
    }
    return SignupForm(
        email=email,
        marketing=request.form.get("marketing") == "yes",
        affiliates=request.form.get("affiliates") == "yes",
        first_name=extra.get("first_name"),
        last_name=extra.get("last_name"),
        attributes=attributes,
    )


@bp.get("/subscribe")
def subscribe_page() -> Any:
    with session_scope(_sessions()) as session:
        _record(session, "signup", "shown")
    return _subscribe_form()


@bp.post("/subscribe")
def subscribe() -> Any:
    settings = _settings()
    values = request.form.to_dict()
    values.pop("csrf", None)
    with session_scope(_sessions()) as session:
        early = _screen(
            session, "signup", "subscribe", lambda msg: _subscribe_form(values, msg, 400)
        )
        if early is not None:
            return early
        hit = client_hit()
        try:
            form = _parse_signup()
            with session.begin_nested():
                _, mail = request_signup(session, settings, _signer(), form, hit)
        except SignupError as exc:
            _record(session, "signup", f"invalid_{exc.field}", "refused")
            return _subscribe_form(values, _sentence(str(exc)), 400)
    _send_after_answer(mail)
    return _sent("subscribe")


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def _sent(kind: str) -> tuple[str, int]:
    return render_template("request_sent.html", settings=_settings(), kind=kind), 200


# --- confirmation -----------------------------------------------------------------------------


def _confirm_invalid(session: Session, exc: BadToken) -> tuple[str, int]:
    _record(session, "signup_confirm", "refused", exc.outcome.value)
    return render_template(
        "signup_invalid.html",
        settings=_settings(),
        expired=exc.outcome is TokenOutcome.EXPIRED,
    ), 400


@bp.get("/subscribe/confirm/<token>")
def confirm_page(token: str) -> Any:
    """What the link confirms, and one button. Changes nothing (link scanners open links)."""
    settings = _settings()
    with session_scope(_sessions()) as session:
        try:
            row = pending_signup(session, settings, _signer(), token)
        except BadToken as exc:
            return _confirm_invalid(session, exc)
        _record(session, "signup_confirm", "shown", TokenOutcome.VALID.value)
        return render_template(
            "signup_confirm.html",
            settings=settings,
            masked=mask_address(row.address),
            asked=list(row.wording.values()),
            confirmed=row.confirmed_at is not None,
            csrf=form_token(settings.secret_keys, f"confirm:{token}"),
            action=f"/subscribe/confirm/{token}",
        )


@bp.post("/subscribe/confirm/<token>")
def confirm(token: str) -> Any:
    """The double opt-in: consent is recorded here, with its proof, and nowhere earlier."""
    settings = _settings()
    with session_scope(_sessions()) as session:
        try:
            row = pending_signup(session, settings, _signer(), token)
        except BadToken as exc:
            return _confirm_invalid(session, exc)
        if not form_token_ok(
            settings.secret_keys, request.form.get("csrf", ""), f"confirm:{token}", FORM_MAX_AGE
        ):
            _record(session, "signup_confirm", "refused_form_token", TokenOutcome.VALID.value)
            return render_template(
                "expired_form.html", settings=settings, again=f"/subscribe/confirm/{token}"
            ), 400
        try:
            with session.begin_nested():
                newly, address_id = confirm_signup(session, row, client_hit())
        except CannotResubscribe as exc:
            _record(session, "signup_confirm", "resubscribe_refused", TokenOutcome.VALID.value)
            return render_template(
                "signup_done.html", settings=settings, refused=str(exc), preferences_url=None
            ), 409
        _record(
            session,
            "signup_confirm",
            "confirmed" if newly else "already_confirmed",
            TokenOutcome.VALID.value,
        )
        pref = _signer().sign_link(LinkPurpose.PREFERENCES, address_id)
        return render_template(
            "signup_done.html",
            settings=settings,
            refused=None,
            already=not newly,
            preferences_url=f"/preferences/{pref}",
        )


# --- "send me my preferences link" ------------------------------------------------------------


def _link_form(email: str = "", error: str | None = None, status: int = 200) -> tuple[str, int]:
    settings = _settings()
    return render_template(
        "preferences_link.html",
        settings=settings,
        email=email,
        error=error,
        csrf=form_token(settings.secret_keys, "preferences"),
        honeypot=HONEYPOT,
    ), status


@bp.get("/preferences-link")
def preferences_link_page() -> Any:
    with session_scope(_sessions()) as session:
        _record(session, "preferences_link", "shown")
    return _link_form()


@bp.post("/preferences-link")
def preferences_link() -> Any:
    settings = _settings()
    email = (request.form.get("email") or "")[:MAX_EMAIL]
    with session_scope(_sessions()) as session:
        early = _screen(
            session, "preferences_link", "preferences", lambda msg: _link_form(email, msg, 400)
        )
        if early is not None:
            return early
        hit = client_hit()
        try:
            text = _text("email", MAX_EMAIL)
            if text is None:
                raise SignupError("email", "enter your e-mail address")
            with session.begin_nested():
                _, mail = request_preferences_link(session, settings, _signer(), text, hit)
        except SignupError as exc:
            _record(session, "preferences_link", "invalid_email", "refused")
            return _link_form(email, _sentence(str(exc)), 400)
    _send_after_answer(mail)
    return _sent("preferences")
