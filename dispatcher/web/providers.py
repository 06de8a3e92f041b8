"""Provider webhooks: Amazon SES through SNS (``POST /inbound/ses``) and SendGrid's Event
Webhook (``POST /inbound/sendgrid``). A request whose signature does not verify gets 4xx,
changes nothing, and is recorded; a verified event is applied once per event id."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from flask import Blueprint, Response, current_app, request

from dispatcher.db import session_scope
from dispatcher.inbound.apply import apply_report, record_rejected
from dispatcher.inbound.providers import (
    CertFetcher,
    Refused,
    fetch_certificate,
    sendgrid_report,
    ses_report,
    sns_confirm_url,
    verify_sendgrid,
    verify_sns,
)
from dispatcher.settings import Settings
from suppression.tokens import TokenSigner

log = logging.getLogger(__name__)

bp = Blueprint("providers", __name__, url_prefix="/inbound")


def _settings() -> Settings:
    settings = current_app.config["DISPATCHER_SETTINGS"]
    assert isinstance(settings, Settings)
    return settings


def _refused(source: str, body: bytes, exc: Refused) -> Response:
    settings = _settings()
    key = f"rejected:{source}:{hashlib.sha256(body).hexdigest()}"
    with session_scope(current_app.extensions["dispatcher.sessions"]) as session:
        record_rejected(
            session,
            key=key,
            source=source,
            why=str(exc),
            raw=body,
            # Anyone can post here: keep enough to see what it was, not what a flood sends.
            keep=min(settings.inbound_keep_bytes, 4096),
        )
    return Response(f"{exc}\n", status=exc.status, mimetype="text/plain")


def _apply(source: str, items: list[tuple[str, Any, bytes]]) -> dict[str, int]:
    settings = _settings()
    signer = TokenSigner(settings.secret_keys)
    counts: dict[str, int] = {}
    with session_scope(current_app.extensions["dispatcher.sessions"]) as session:
        for key, report, evidence in items:
            done = apply_report(
                session, settings, signer, report, key=key, raw=evidence, source=source
            )
            outcome = "duplicate" if done.duplicate else done.outcome
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


@bp.post("/ses")
def ses() -> Any:
    body = request.get_data(cache=False)[: 1024 * 1024 + 1]
    settings = _settings()
    topics = {t.strip() for t in settings.sns_topic_arns.split(",") if t.strip()}
    fetch: CertFetcher = current_app.config.get("SNS_CERT_FETCHER", fetch_certificate)
    try:
        message = verify_sns(body, topics, fetch)
    except Refused as exc:
        return _refused("ses", body, exc)
    if message["Type"] != "Notification":
        url = sns_confirm_url(message)
        if url is not None and message["Type"] == "SubscriptionConfirmation":
            confirm: CertFetcher = current_app.config.get("SNS_CONFIRMER", fetch_certificate)
            confirm(url)
        return Response("ok\n", mimetype="text/plain")
    counts = _apply("ses", [ses_report(message)])
    return Response(f"{counts}\n", mimetype="text/plain")


@bp.post("/sendgrid")
def sendgrid() -> Any:
    body = request.get_data(cache=False)[: 1024 * 1024 + 1]
    settings = _settings()
    try:
        events = verify_sendgrid(
            body,
            request.headers.get("X-Twilio-Email-Event-Webhook-Signature", ""),
            request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", ""),
            settings.sendgrid_public_key,
        )
    except Refused as exc:
        return _refused("sendgrid", body, exc)
    counts = _apply("sendgrid", [sendgrid_report(e) for e in events[:1000]])
    return Response(f"{counts}\n", mimetype="text/plain")
