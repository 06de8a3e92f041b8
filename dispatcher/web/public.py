"""Recipient pages: unsubscribe (a GET never changes anything), RFC 8058 one-click,
and the preference center. Every hit is recorded with time, IP, user agent and outcome."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, render_template, request
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest

from dispatcher.campaigns.deliveries import stop_queued
from dispatcher.db import session_scope
from dispatcher.models import Campaign
from dispatcher.ops import metrics
from dispatcher.settings import Settings
from dispatcher.web import limits
from dispatcher.web.security import client_hit, form_token, form_token_ok
from suppression.address import mask_address
from suppression.consent import current_consent, record_consent
from suppression.events import Hit, record_event
from suppression.models import Address, ConsentStatus, Scope, utcnow
from suppression.suppressions import active_suppressions
from suppression.tokens import BadToken, LinkPurpose, LinkSubject, TokenOutcome, TokenSigner
from suppression.unsubscribe import (
    CannotResubscribe,
    resolve_link,
    resubscribe,
    staff_only_suppressions,
    unsubscribe_address,
)

bp = Blueprint("public", __name__)

FORM_MAX_AGE = 6 * 3600


def _settings() -> Settings:
    settings = current_app.config["DISPATCHER_SETTINGS"]
    assert isinstance(settings, Settings)
    return settings


def _signer() -> TokenSigner:
    return TokenSigner(_settings().secret_keys)


def _hit() -> Hit:
    return client_hit()


def _form_token(link_token: str) -> str:
    """CSRF: proof that a form was served by our page for this very link."""
    return form_token(_settings().secret_keys, link_token)


def _form_ok(link_token: str) -> bool:
    csrf = request.form.get("csrf", "")
    return form_token_ok(_settings().secret_keys, csrf, link_token, FORM_MAX_AGE)


def _record_hit(
    session: Session,
    route: str,
    outcome: str,
    action: str,
    address_id: int | None = None,
    **detail: Any,
) -> None:
    record_event(
        session,
        "web_hit",
        address_id=address_id,
        hit=_hit(),
        outcome=outcome,
        route=route,
        action=action,
        method=request.method,
        **detail,
    )


def _invalid(route: str, exc: BadToken) -> tuple[str, int]:
    """The same page for every bad link, whether or not the address exists.

    Bad links are tallied per network, route, outcome and minute; only the first of each
    gets an audit event, so garbage cannot grow the audit trail by one row per request.
    """
    with session_scope(current_app.extensions["dispatcher.sessions"]) as session:
        if limits.tally_hit(session, request.remote_addr, route, exc.outcome.value) == 1:
            _record_hit(session, route, exc.outcome.value, "refused")
    return render_template("invalid.html", settings=_settings()), 400


def _campaign_name(session: Session, subject: LinkSubject) -> str | None:
    if subject.campaign_id is None:
        return None
    campaign = session.get(Campaign, subject.campaign_id)
    return campaign.name if campaign is not None else None


def _page(
    session: Session, template: str, address: Address, subject: LinkSubject, **extra: Any
) -> str:
    signer = _signer()
    pref_token = signer.sign_link(LinkPurpose.PREFERENCES, address.id, subject.campaign_id)
    return render_template(
        template,
        settings=_settings(),
        masked=mask_address(address.address),
        campaign_name=_campaign_name(session, subject),
        preferences_url=f"/preferences/{pref_token}",
        **extra,
    )


def _unsubscribed(session: Session, address_id: int) -> bool:
    return any(s.reason == "unsubscribe" for s in active_suppressions(session, address_id))


@bp.get("/u/<token>")
def unsubscribe_page(token: str) -> Any:
    """Who is being unsubscribed, from what, and one button. Changes nothing."""
    sessions = current_app.extensions["dispatcher.sessions"]
    try:
        with session_scope(sessions) as session:
            subject, address = resolve_link(session, _signer(), LinkPurpose.UNSUBSCRIBE, token)
            _record_hit(session, "unsubscribe", TokenOutcome.VALID.value, "shown", address.id)
            return _page(
                session,
                "unsubscribe.html",
                address,
                subject,
                form_token=_form_token(token),
                already=_unsubscribed(session, address.id),
            )
    except BadToken as exc:
        return _invalid("unsubscribe", exc)


@bp.post("/u/<token>")
def unsubscribe(token: str) -> Any:
    """RFC 8058 one-click (body ``List-Unsubscribe=One-Click``: no cookie, no page), or the
    button of our own page (with its form token)."""
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    sessions = current_app.extensions["dispatcher.sessions"]
    try:
        with session_scope(sessions) as session:
            subject, address = resolve_link(session, _signer(), LinkPurpose.UNSUBSCRIBE, token)
            if not one_click and not _form_ok(token):
                _record_hit(
                    session,
                    "unsubscribe",
                    TokenOutcome.VALID.value,
                    "refused_form_token",
                    address.id,
                )
                return render_template(
                    "expired_form.html", settings=_settings(), again=f"/u/{token}"
                ), 400
            result = unsubscribe_address(
                session,
                address,
                stop_queued=stop_queued,
                hit=_hit(),
                source="one_click" if one_click else "unsubscribe_page",
                campaign_id=subject.campaign_id,
            )
            if result.newly_suppressed:
                metrics.UNSUBSCRIBES.labels("one_click" if one_click else "unsubscribe_page").inc()
            _record_hit(
                session,
                "unsubscribe",
                TokenOutcome.VALID.value,
                "unsubscribed" if result.newly_suppressed else "already_unsubscribed",
                address.id,
            )
            if one_click:
                return Response("Unsubscribed.\n", status=200, mimetype="text/plain")
            pref = _signer().sign_link(LinkPurpose.PREFERENCES, address.id, subject.campaign_id)
            return _page(
                session, "unsubscribed.html", address, subject, form_token=_form_token(pref)
            )
    except BadToken as exc:
        return _invalid("unsubscribe", exc)


def _preferences_view(
    session: Session,
    token: str,
    address: Address,
    subject: LinkSubject,
    message: str | None = None,
    status: int = 200,
) -> tuple[str, int]:
    states = {scope: current_consent(session, address.id, scope) for scope in Scope}
    opted = {
        scope.value: (s is not None and s.status == ConsentStatus.OPTED_IN)
        for scope, s in states.items()
    }
    if _unsubscribed(session, address.id):
        opted["marketing"] = False
    blocked = staff_only_suppressions(session, address.id)
    return _page(
        session,
        "preferences.html",
        address,
        subject,
        opted=opted,
        blocked=[b.replace("_", " ") for b in blocked],
        message=message,
        form_token=_form_token(token),
        action=f"/preferences/{token}",
    ), status


@bp.get("/preferences/<token>")
def preferences_page(token: str) -> Any:
    sessions = current_app.extensions["dispatcher.sessions"]
    try:
        with session_scope(sessions) as session:
            subject, address = resolve_link(session, _signer(), LinkPurpose.PREFERENCES, token)
            _record_hit(session, "preferences", TokenOutcome.VALID.value, "shown", address.id)
            return _preferences_view(session, token, address, subject)
    except BadToken as exc:
        return _invalid("preferences", exc)


_CHOICES = {"yes": True, "no": False}


def _choice(name: str) -> bool | None:
    """A radio answer; ``None`` when the form did not ask (that scope stays as it is)."""
    value = request.form.get(name)
    if value is None:
        return None
    if value not in _CHOICES:
        raise BadRequest(f"{name} must be yes or no")
    return _CHOICES[value]


def _marketing_on(session: Session, address_id: int) -> bool:
    state = current_consent(session, address_id, Scope.MARKETING)
    return (
        state is not None
        and state.status == ConsentStatus.OPTED_IN
        and not _unsubscribed(session, address_id)
    )


@bp.post("/preferences/<token>")
def preferences(token: str) -> Any:
    """Change consent per scope; written to the ledger (source ``preferences``, time, IP).

    The re-subscribe button of the confirmation page posts ``marketing=yes`` alone.
    """
    want_marketing = _choice("marketing")
    want_affiliates = _choice("affiliates")
    sessions = current_app.extensions["dispatcher.sessions"]
    try:
        with session_scope(sessions) as session:
            subject, address = resolve_link(session, _signer(), LinkPurpose.PREFERENCES, token)
            if not _form_ok(token):
                _record_hit(
                    session,
                    "preferences",
                    TokenOutcome.VALID.value,
                    "refused_form_token",
                    address.id,
                )
                return render_template(
                    "expired_form.html", settings=_settings(), again=f"/preferences/{token}"
                ), 400
            changes: list[str] = []
            if want_marketing is not None and want_marketing != _marketing_on(session, address.id):
                if want_marketing:
                    try:
                        with session.begin_nested():
                            resubscribe(session, address.id, hit=_hit(), source="preferences")
                    except CannotResubscribe as exc:
                        _record_hit(
                            session,
                            "preferences",
                            TokenOutcome.VALID.value,
                            "resubscribe_refused",
                            address.id,
                        )
                        return _preferences_view(session, token, address, subject, str(exc), 409)
                else:
                    unsubscribed = unsubscribe_address(
                        session,
                        address,
                        stop_queued=stop_queued,
                        hit=_hit(),
                        source="preferences",
                        campaign_id=subject.campaign_id,
                    )
                    if unsubscribed.newly_suppressed:
                        metrics.UNSUBSCRIBES.labels("preferences").inc()
                changes.append(f"marketing:{'opted_in' if want_marketing else 'opted_out'}")
            if want_affiliates is not None:
                affiliates = current_consent(session, address.id, Scope.AFFILIATES)
                wanted = ConsentStatus.OPTED_IN if want_affiliates else ConsentStatus.OPTED_OUT
                if (affiliates is None and want_affiliates) or (
                    affiliates is not None and affiliates.status != wanted
                ):
                    record_consent(
                        session,
                        address.id,
                        Scope.AFFILIATES,
                        wanted,
                        source="preferences",
                        occurred_at=utcnow(),
                        recipient_action=True,
                        hit=_hit(),
                    )
                    changes.append(f"affiliates:{wanted.value}")
            _record_hit(
                session,
                "preferences",
                TokenOutcome.VALID.value,
                "saved" if changes else "unchanged",
                address.id,
                changes=changes,
            )
            message = (
                "You are subscribed again."
                if want_marketing and want_affiliates is None
                else "Your preferences are saved."
            )
            return _preferences_view(session, token, address, subject, message)
    except BadToken as exc:
        return _invalid("preferences", exc)


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for it on every page; answer without a 404 in every log."""
    return Response(status=204)
