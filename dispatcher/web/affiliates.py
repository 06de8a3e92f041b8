"""Affiliate downloads and suppression feeds: a valid signature AND the affiliate's own
credential, or nothing. Every attempt, refused or served, is audited with IP and user agent.

The credential comes as HTTP Basic (user = affiliate name, password = credential) or as
``Authorization: Bearer <credential>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, request
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import lift_statement_timeout, session_scope
from dispatcher.models import Affiliate, AffiliateRelease
from dispatcher.settings import Settings
from dispatcher.sharing.affiliates import (
    AffiliateError,
    NotAuthenticated,
    authenticate,
    authenticate_bearer,
)
from dispatcher.sharing.export import feed, feed_body
from dispatcher.web import limits
from suppression.events import Hit, record_event
from suppression.tokens import BadToken, LinkPurpose, TokenSigner

bp = Blueprint("affiliates", __name__, url_prefix="/affiliates")

_READ_CHUNK = 64 * 1024


def _settings() -> Settings:
    settings = current_app.config["DISPATCHER_SETTINGS"]
    assert isinstance(settings, Settings)
    return settings


def _sessions() -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = current_app.extensions["dispatcher.sessions"]
    return sessions


def _hit() -> Hit:
    return Hit(ip=request.remote_addr, user_agent=request.headers.get("User-Agent", "")[:512])


def _refuse(status: int, message: str) -> Response:
    response = Response(message + "\n", status=status, mimetype="text/plain")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="affiliates", charset="UTF-8"'
    return response


class RateLimited(Exception):
    """Too many failed credential checks from this network or for this affiliate."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; try again in {retry_after} s")
        self.retry_after = retry_after


def _caller(session: Session) -> Affiliate:
    """The affiliate whose credential came with the request, or :class:`NotAuthenticated`.

    Failed checks are counted per network and per affiliate name; over the budget the
    request is refused (:class:`RateLimited`) before the costly hash is computed, and the
    hash itself runs one at a time per process (:class:`limits.Busy` after a wait).
    """
    auth = request.authorization
    if auth is None:
        raise NotAuthenticated("no_credential", "no credential given")
    if auth.type == "basic" and auth.username and auth.password:
        name, check = auth.username, lambda: authenticate(session, auth.username, auth.password)
    elif auth.type == "bearer" and auth.token:
        token = auth.token
        name, check = token.partition(".")[0], lambda: authenticate_bearer(session, token)
    else:
        raise NotAuthenticated("no_credential", "use HTTP Basic or a Bearer credential")
    keys = limits.failure_keys(request.remote_addr, name)
    wait = limits.retry_after(session, keys)
    if wait:
        raise RateLimited(wait)
    with limits.one_check_at_a_time():
        try:
            return check()
        except NotAuthenticated as exc:
            if exc.outcome == "bad_credential":
                limits.count_failure(session, keys)
            raise


def _refuse_caller(exc: RateLimited | limits.Busy) -> Response:
    if isinstance(exc, RateLimited):
        response = _refuse(429, f"Not signed in: {exc}.")
    else:
        response = _refuse(503, "Busy checking credentials; try again shortly.")
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _audit(session: Session, kind: str, outcome: str, **detail: Any) -> None:
    record_event(session, kind, hit=_hit(), outcome=outcome, **detail)


def _audit_refusal(session: Session, kind: str, outcome: str, **detail: Any) -> None:
    """Audit a refusal anyone can repeat at no cost (a garbage link, no credential, over
    the limit): tallied per network and minute, with an event for the first of each only.
    Wrong credentials keep an event each; the failure limit bounds them."""
    if outcome == "bad_credential" or limits.tally_hit(session, _hit().ip, kind, outcome) == 1:
        _audit(session, kind, outcome, **detail)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stream(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            yield chunk


@bp.get("/download/<token>")
def download(token: str) -> Response:
    """The export named by the signed token, to the affiliate it was made for."""
    settings = _settings()
    with session_scope(_sessions()) as session:
        try:
            payload = TokenSigner(settings.secret_keys).read_timed(
                LinkPurpose.AFFILIATE_DOWNLOAD, token, int(settings.affiliate_link_seconds)
            )
        except BadToken as exc:
            _audit_refusal(session, "affiliate_download", exc.outcome.value)
            return _refuse(403, f"This download link is not valid ({exc}). Ask for a new one.")
        release_id, owner_id = payload.get("r"), payload.get("a")
        try:
            affiliate = _caller(session)
        except (RateLimited, limits.Busy) as exc:
            _audit_refusal(
                session,
                "affiliate_download",
                "rate_limited" if isinstance(exc, RateLimited) else "busy",
                affiliate_id=owner_id,
                release_id=release_id,
            )
            return _refuse_caller(exc)
        except NotAuthenticated as exc:
            _audit_refusal(
                session,
                "affiliate_download",
                exc.outcome,
                affiliate_id=owner_id,
                release_id=release_id,
            )
            status = 403 if exc.outcome == "disabled" else 401
            return _refuse(status, f"Not signed in: {exc}.")
        detail = {"affiliate_id": affiliate.id, "release_id": release_id}
        release = session.get(AffiliateRelease, release_id) if isinstance(release_id, int) else None
        if (
            release is None
            or release.kind != "export"
            or release.affiliate_id != affiliate.id
            or owner_id != affiliate.id
            or release.path is None
        ):
            _audit(session, "affiliate_download", "other_affiliate", owner_id=owner_id, **detail)
            return _refuse(403, "This download link was not made for you.")
        path = Path(release.path)
        if not path.is_file():
            _audit(session, "affiliate_download", "file_gone", **detail)
            return _refuse(410, "This export is no longer kept. Ask for a new one.")
        # The audit promised this content; a file changed since must not go out.
        if _sha256_of(path) != release.sha256:
            _audit(session, "affiliate_download", "altered", **detail)
            return _refuse(410, "This export changed after it was written. Ask for a new one.")
        _audit(
            session,
            "affiliate_download",
            "served",
            rows=release.row_count,
            sha256=release.sha256,
            **detail,
        )
        name, sha256 = f"{affiliate.name}-{release.id}.csv", release.sha256
    response = Response(_stream(path), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Content-Length"] = str(path.stat().st_size)
    response.headers["X-Content-SHA256"] = sha256
    return response


@bp.get("/feed")
def suppression_feed() -> Response:
    """SHA-256 digests of canonical addresses to purge, one per line (``?since=ISO``)."""
    with session_scope(_sessions()) as session:
        try:
            affiliate = _caller(session)
        except (RateLimited, limits.Busy) as exc:
            _audit_refusal(
                session,
                "affiliate_feed",
                "rate_limited" if isinstance(exc, RateLimited) else "busy",
            )
            return _refuse_caller(exc)
        except NotAuthenticated as exc:
            _audit_refusal(session, "affiliate_feed", exc.outcome)
            return _refuse(403 if exc.outcome == "disabled" else 401, f"Not signed in: {exc}.")
        since = None
        if request.args.get("since"):
            try:
                since = datetime.fromisoformat(request.args["since"])
            except ValueError:
                since = None
            if since is None or since.tzinfo is None:
                _audit(session, "affiliate_feed", "bad_since", affiliate_id=affiliate.id)
                return _refuse(400, "since must be an ISO-8601 time with a zone (…+00:00)")
        # Every digest the affiliate holds: for a large list, longer than a web request's
        # statements may run.
        lift_statement_timeout(session)
        try:
            result = feed(session, affiliate, since=since, actor=affiliate.name, hit=_hit())
        except AffiliateError as exc:
            return _refuse(400, str(exc))
    response = Response(feed_body(result.digests), mimetype="text/plain")
    response.headers["X-Feed-Basis"] = result.basis
    return response
