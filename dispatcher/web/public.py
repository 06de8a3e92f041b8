"""Recipient pages: unsubscribe (a GET never changes anything), RFC 8058 one-click,
and the preference center. Every hit is recorded with time, IP, user agent and outcome."""

from __future__ import annotations

from email.utils import parseaddr
from functools import lru_cache
from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest

from dispatcher.campaigns.deliveries import stop_queued
from dispatcher.db import page_reads, session_scope
from dispatcher.inbound import spool
from dispatcher.inbound.drain import start_drainer
from dispatcher.ops import metrics
from dispatcher.settings import Settings
from dispatcher.web import limits
from dispatcher.web.hits import HitCounter
from dispatcher.web.reads import LinkRead, read_link, read_preferences
from dispatcher.web.security import client_hit, form_token, form_token_ok
from dispatcher.web.standing import Standing, done_messages, standing
from suppression.address import mask_address
from suppression.consent import current_consent, record_consent
from suppression.events import Hit, event_row, fold_key, record_event
from suppression.models import Address, ConsentStatus, Scope, utcnow
from suppression.tokens import BadToken, LinkPurpose, LinkSubject, TokenOutcome, TokenSigner
from suppression.unsubscribe import (
    CannotResubscribe,
    resolve_link,
    resolve_unsubscribe_link,
    resubscribe,
    unsubscribe_address,
)

bp = Blueprint("public", __name__)

FORM_MAX_AGE = 6 * 3600


def _settings() -> Settings:
    settings = current_app.config["DISPATCHER_SETTINGS"]
    assert isinstance(settings, Settings)
    return settings


def _engine() -> Engine:
    """The app's engine: the link pages read on its pooled connections directly."""
    engine = current_app.extensions["dispatcher.sessions"].kw["bind"]
    assert isinstance(engine, Engine)
    return engine


def _signer() -> TokenSigner:
    """Built once per app (``create_app``), not per request."""
    signer = current_app.extensions["dispatcher.signer"]
    assert isinstance(signer, TokenSigner)
    return signer


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
    """This request's audit row, written in the caller's transaction."""
    event = _hit_event(route, outcome, action, address_id, **detail)
    record_event(session, event.pop("kind"), **event)


def _hit_event(
    route: str, outcome: str, action: str, address_id: int | None = None, **detail: Any
) -> dict[str, Any]:
    """A hit's audit event, as ``record_event``'s arguments (with ``kind``)."""
    return {
        "kind": "web_hit",
        "address_id": address_id,
        "hit": _hit(),
        "outcome": outcome,
        "route": route,
        "action": action,
        "method": request.method,
        **detail,
    }


def _count_hit(route: str, action: str, token: str, address_id: int) -> None:
    """A page view, counted per link, IP, browser and fold window, and written in a batch
    within a second (``dispatcher/web/hits.py``): a scanner's storm of GETs is one row with
    a count, and a GET writes nothing itself."""
    hit = _hit()
    fold = fold_key("web_hit", route, action, request.method, token, hit.ip, hit.user_agent)
    row = event_row(
        "web_hit",
        address_id=address_id,
        hit=hit,
        outcome=TokenOutcome.VALID.value,
        fold=fold,
        route=route,
        action=action,
        method=request.method,
    )
    counter = current_app.extensions["dispatcher.hits"]
    assert isinstance(counter, HitCounter)
    counter.add(row)


def _invalid(route: str, exc: BadToken) -> tuple[str, int]:
    """The same page for every bad link, whether or not the address exists.

    Bad links are tallied per network, route, outcome and minute; only the first of each
    gets an audit event, so garbage cannot grow the audit trail by one row per request.
    """
    with session_scope(current_app.extensions["dispatcher.sessions"]) as session:
        if limits.tally_hit(session, request.remote_addr, route, exc.outcome.value) == 1:
            _record_hit(session, route, exc.outcome.value, "refused")
    return render_template("invalid.html", settings=_settings()), 400


def _page(template: str, link: LinkRead, pref_token: str | None = None, **extra: Any) -> str:
    """``pref_token``: the link's own preference token when the caller has it (the preference
    page: the same address and campaign), else one is signed."""
    if pref_token is None:
        pref_token = _signer().sign_link(LinkPurpose.PREFERENCES, link.address_id, link.campaign_id)
    return render_template(
        template,
        settings=_settings(),
        masked=mask_address(link.address),
        campaign_name=link.campaign_name,
        preferences_url=f"/preferences/{pref_token}",
        reply_address=_reply_address(_settings().sender),
        **extra,
    )


@lru_cache(maxsize=4)
def _reply_address(sender: str) -> str:
    """The address part of ``DISPATCHER_SENDER``, parsed once, not on every page."""
    return parseaddr(sender)[1]


@bp.get("/u/<token>")
def unsubscribe_page(token: str) -> Any:
    """Who is being unsubscribed, from what, and one button. Changes nothing.

    Link scanners fetch it within seconds of delivery: one read; its hit is counted."""
    try:
        subject = _signer().read_link(LinkPurpose.UNSUBSCRIBE, token)
        with page_reads(_engine()) as reads:
            link = read_link(reads, subject)
        _count_hit("unsubscribe", "shown", token, link.address_id)
        return _page(
            "unsubscribe.html", link, form_token=_form_token(token), already=link.unsubscribed
        )
    except BadToken as exc:
        return _invalid("unsubscribe", exc)


@bp.post("/u/<token>")
def unsubscribe(token: str) -> Any:
    """RFC 8058 one-click (body ``List-Unsubscribe=One-Click``: no cookie, no page), or the
    button of our own page (with its form token).

    With the database away, a request whose link verifies is written to the local spool
    and answered 202: it is applied when the database is back, never lost.
    """
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    try:
        return _unsubscribe(token, one_click)
    except spool.DATABASE_AWAY:
        return _spool_unsubscribe(token, one_click)


def _spool_unsubscribe(token: str, one_click: bool) -> Any:
    try:
        _signer().read_link(LinkPurpose.UNSUBSCRIBE, token)
    except BadToken:
        # The same page as ever; the hit cannot be recorded while the database is away.
        return render_template("invalid.html", settings=_settings()), 400
    if not one_click and not _form_ok(token):
        return Response("Please try again in a few minutes.\n", status=503, mimetype="text/plain")
    hit = _hit()
    settings = _settings()
    spool.write(
        settings.spool,
        "one_click",
        {"token": token, "ip": hit.ip, "user_agent": (hit.user_agent or "")[:512]},
    )
    start_drainer(current_app)
    return Response(
        "Unsubscribe accepted; it takes effect within minutes.\n",
        status=202,
        mimetype="text/plain",
    )


def _unsubscribe(token: str, one_click: bool) -> Any:
    sessions = current_app.extensions["dispatcher.sessions"]
    try:
        with session_scope(sessions) as session:
            subject, address, held = resolve_unsubscribe_link(session, _signer(), token)
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
                held=held,
                # This request's own audit row, written with the unsubscribe's event.
                audit=lambda created: _hit_event(
                    "unsubscribe",
                    TokenOutcome.VALID.value,
                    "unsubscribed" if created else "already_unsubscribed",
                    address.id,
                ),
            )
            if result.newly_suppressed:
                metrics.UNSUBSCRIBES.labels("one_click" if one_click else "unsubscribe_page").inc()
            if one_click:
                return Response("Unsubscribed.\n", status=200, mimetype="text/plain")
            pref = _signer().sign_link(LinkPurpose.PREFERENCES, address.id, subject.campaign_id)
            return _page(
                "unsubscribed.html",
                read_link(session, subject),
                form_token=_form_token(pref),
                stopped=standing(session, address.id).stopped,
            )
    except BadToken as exc:
        return _invalid("unsubscribe", exc)


def _preferences_view(
    token: str,
    link: LinkRead,
    now: Standing,
    messages: list[str] | None = None,
    status: int = 200,
    refused: str | None = None,
) -> tuple[str, int]:
    """The page shows what the gate will do, and offers only choices that can take effect."""
    return _page(
        "preferences.html",
        link,
        token,
        now=now,
        messages=messages or [],
        refused=refused,
        form_token=_form_token(token),
        action=f"/preferences/{token}",
    ), status


@bp.get("/preferences/<token>")
def preferences_page(token: str) -> Any:
    try:
        subject = _signer().read_link(LinkPurpose.PREFERENCES, token)
        with page_reads(_engine()) as reads:
            link, now = read_preferences(reads, subject)
        _count_hit("preferences", "shown", token, link.address_id)
        done = done_messages(request.args.get("done"), now)
        return _preferences_view(token, link, now, done)
    except BadToken as exc:
        return _invalid("preferences", exc)


_CHOICES = {"yes": True, "no": False}


def _marketing_changes(session: Session, address_id: int, want: bool, before: Standing) -> bool:
    """Whether the marketing answer changes anything: a yes from someone not receiving
    marketing, a no from someone receiving it, and a no from someone who is not receiving it
    but whose latest word is not an opt-out (never asked, or kept from mail by something
    else): their "no" is recorded, so a later import saying yes cannot outrank it."""
    if want:
        return not before.receives_marketing
    if before.receives_marketing:
        return True
    latest = current_consent(session, address_id, Scope.MARKETING)
    return latest is None or latest.status != ConsentStatus.OPTED_OUT


def _choice(name: str) -> bool | None:
    """A radio answer; ``None`` when the form did not ask (that scope stays as it is)."""
    value = request.form.get(name)
    if value is None:
        return None
    if value not in _CHOICES:
        raise BadRequest(f"{name} must be yes or no")
    return _CHOICES[value]


def _refused(
    session: Session,
    token: str,
    address: Address,
    subject: LinkSubject,
    choice: str,
    why: str | None = None,
) -> tuple[str, int]:
    """A choice that cannot take effect: recorded, nothing changed, 409 and the page."""
    _record_hit(session, "preferences", TokenOutcome.VALID.value, "resubscribe_refused", address.id)
    link = read_link(session, subject)
    now = standing(session, address.id)
    return _preferences_view(token, link, now, [why] if why else None, 409, refused=choice)


@bp.post("/preferences/<token>")
def preferences(token: str) -> Any:
    """Change consent per scope; written to the ledger (source ``preferences``, time, IP).

    The re-subscribe button of the confirmation page posts ``marketing=yes`` alone. A saved
    form answers 303 to the page (post/redirect/get: a refresh does not post again), which
    says what changed; a choice that cannot take effect answers 409 and changes nothing.
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
            before = standing(session, address.id)
            if want_affiliates and not before.can_change:
                # Sharing needs marketing mail, which only staff can restore here.
                return _refused(session, token, address, subject, "sharing")
            if want_marketing is not None and _marketing_changes(
                session, address.id, want_marketing, before
            ):
                if want_marketing:
                    try:
                        with session.begin_nested():
                            resubscribe(session, address.id, hit=_hit(), source="preferences")
                    except CannotResubscribe as exc:
                        return _refused(session, token, address, subject, "marketing", str(exc))
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
                # An explicit "no" is recorded even for someone never asked: a later
                # import saying yes must not outrank what they chose on our own page.
                if affiliates is None or affiliates.status != wanted:
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
            codes = [
                change.replace("affiliates:", "sharing-")
                .replace("marketing:", "marketing-")
                .replace("opted_in", "on")
                .replace("opted_out", "off")
                for change in changes
            ]
            done = ",".join(codes) or "unchanged"
            # Relative: the browser resolves it against the URL it posted to; no Host header.
            return redirect(f"/preferences/{token}?done={done}", 303)
    except BadToken as exc:
        return _invalid("preferences", exc)


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for it on every page; answer without a 404 in every log."""
    return Response(status=204)
