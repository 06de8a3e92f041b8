"""Affiliate downloads and suppression feeds: a valid signature AND the affiliate's own
credential (HTTP Basic: name and credential), or nothing. Every attempt is audited."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, request, send_file
from sqlalchemy.orm import Session

from dispatcher.affiliates import authenticate, feed
from dispatcher.db import session_scope
from dispatcher.models import Affiliate, AffiliateRelease
from dispatcher.settings import Settings
from suppression.events import Hit, record_event
from suppression.tokens import BadToken, LinkPurpose, TokenSigner

bp = Blueprint("affiliates", __name__, url_prefix="/affiliates")


def _settings() -> Settings:
    settings = current_app.config["DISPATCHER_SETTINGS"]
    assert isinstance(settings, Settings)
    return settings


def _hit() -> Hit:
    return Hit(ip=request.remote_addr, user_agent=request.headers.get("User-Agent", "")[:512])


def _refuse(status: int, message: str) -> Response:
    response = Response(message + "\n", status=status, mimetype="text/plain")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="affiliates", charset="UTF-8"'
    return response


def _caller(session: Session) -> Affiliate | None:
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username or not auth.password:
        return None
    return authenticate(session, auth.username, auth.password)


def _audit(session: Session, kind: str, outcome: str, **detail: Any) -> None:
    record_event(session, kind, hit=_hit(), outcome=outcome, **detail)


@bp.get("/download/<token>")
def download(token: str) -> Response:
    settings = _settings()
    sessions = current_app.extensions["dispatcher.sessions"]
    with session_scope(sessions) as session:
        try:
            payload = TokenSigner(settings.secret_keys).read_timed(
                LinkPurpose.AFFILIATE_DOWNLOAD, token, int(settings.affiliate_link_seconds)
            )
        except BadToken as exc:
            _audit(session, "affiliate_download", exc.outcome.value)
            return _refuse(403, f"This download link is not valid ({exc}). Ask for a new one.")
        affiliate = _caller(session)
        if affiliate is None:
            _audit(session, "affiliate_download", "bad_credential", release_id=payload.get("r"))
            return _refuse(401, "Sign in with your affiliate name and credential.")
        release = session.get(AffiliateRelease, payload.get("r"))
        if (
            release is None
            or release.kind != "export"
            or release.affiliate_id != affiliate.id
            or payload.get("a") != affiliate.id
            or release.path is None
        ):
            _audit(
                session,
                "affiliate_download",
                "other_affiliate",
                affiliate_id=affiliate.id,
                release_id=payload.get("r"),
            )
            return _refuse(403, "This download is not yours.")
        path = Path(release.path)
        if not path.is_file():
            _audit(
                session,
                "affiliate_download",
                "file_gone",
                affiliate_id=affiliate.id,
                release_id=release.id,
            )
            return _refuse(410, "This export is no longer kept. Ask for a new one.")
        _audit(
            session,
            "affiliate_download",
            "served",
            affiliate_id=affiliate.id,
            release_id=release.id,
            rows=release.row_count,
            sha256=release.sha256,
        )
    response = send_file(
        path,
        mimetype="text/csv",
        as_attachment=True,
        download_name=f"{affiliate.name}-{release.id}.csv",
    )
    response.headers["X-Content-SHA256"] = release.sha256
    return response


@bp.get("/feed")
def suppression_feed() -> Response:
    """SHA-256 digests of canonical addresses to purge, one per line (``?since=ISO``)."""
    sessions = current_app.extensions["dispatcher.sessions"]
    with session_scope(sessions) as session:
        affiliate = _caller(session)
        if affiliate is None:
            _audit(session, "affiliate_feed", "bad_credential")
            return _refuse(401, "Sign in with your affiliate name and credential.")
        since = None
        if request.args.get("since"):
            try:
                since = datetime.fromisoformat(request.args["since"])
            except ValueError:
                return _refuse(400, "since must be an ISO-8601 time with zone")
            if since.tzinfo is None:
                return _refuse(400, "since must be an ISO-8601 time with zone")
        digests, _ = feed(session, affiliate, since=since, actor=affiliate.name, hit=_hit())
    return Response("".join(f"{d}\n" for d in digests), mimetype="text/plain")
