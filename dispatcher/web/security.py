"""What every response of the web app carries, and what it refuses before any view runs.

Security headers (no third-party resource can load, no framing, no referrer), a small body
limit, error pages that change nothing, and the audit record of refused recipient requests:
the privacy policy promises that every recipient-facing hit is logged, not only the ones
that reached a view.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import urljoin, urlsplit

from flask import Flask, Response, current_app, render_template, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from dispatcher.db import session_scope
from dispatcher.inbound.spool import DATABASE_AWAY
from dispatcher.settings import Settings
from dispatcher.web.limits import tally_hit
from suppression.events import Hit, record_event
from suppression.tokens import BadToken, LinkPurpose, TokenSigner

log = logging.getLogger(__name__)

# A one-click POST is 26 bytes and our largest form a few hundred: anything near this is abuse.
MAX_BODY_BYTES = 16 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

_SECURITY_ITEMS = tuple(SECURITY_HEADERS.items())

# Recipient routes by path prefix, named as the views name them in the audit trail.
RECIPIENT_ROUTES = {
    "/u/": "unsubscribe",
    "/preferences/": "preferences",
    "/subscribe": "signup",
    "/preferences-link": "preferences_link",
}


def client_hit() -> Hit:
    """The caller as the security log records it (IP as seen after trusted proxies)."""
    return Hit(ip=request.remote_addr, user_agent=request.headers.get("User-Agent", "")[:512])


@lru_cache(maxsize=8)
def _signer(keys: tuple[str, ...]) -> TokenSigner:
    """One signer per key list and process, not one per request."""
    return TokenSigner(keys)


def form_token(keys: Sequence[str], bound_to: str) -> str:
    """CSRF: proof that a form was served by our own page, for ``bound_to`` (a form or link)."""
    digest = hashlib.sha256(bound_to.encode()).hexdigest()[:32]
    return _signer(tuple(keys)).sign_timed(LinkPurpose.FORM, {"l": digest})


def form_token_ok(keys: Sequence[str], token: str, bound_to: str, max_age: int) -> bool:
    try:
        payload = _signer(tuple(keys)).read_timed(LinkPurpose.FORM, token, max_age)
    except BadToken:
        return False
    return payload.get("l") == hashlib.sha256(bound_to.encode()).hexdigest()[:32]


def install(app: Flask, settings: Settings, trusted_proxies: int = 0) -> None:
    """Body limits, security headers and error pages for ``app``.

    ``trusted_proxies``: how many reverse proxies (the TLS terminator) stand in front of the
    app and append to ``X-Forwarded-For``; without it the audit log would record the proxy's
    IP for every recipient. Zero trusts no forwarded header at all.
    """
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_BODY_BYTES
    if trusted_proxies < 0:
        raise ValueError(f"trusted_proxies must be 0 or more, not {trusted_proxies}")
    if trusted_proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=trusted_proxies, x_proto=trusted_proxies
        )

    @app.before_request
    def _bounded_chunked_body() -> None:
        _read_chunked_body()

    @app.after_request
    def _security_headers(response: Response) -> Response:
        # One pass over the response's few headers, not one look-up per header we add.
        present = {name.lower() for name, _ in response.headers}
        response.headers.extend(
            [(name, value) for name, value in _SECURITY_ITEMS if name.lower() not in present]
        )
        if "location" in present:
            location = response.headers["Location"]
            response.headers["Location"] = _on_base_url(settings.base_url, location)
        return response

    def _database_unavailable(exc: Exception) -> tuple[str, int, dict[str, str]]:
        """The database did not answer (away, or a row held past the web's lock timeout):
        the request's transaction was rolled back whole. 503 and the error page, which says
        nothing was changed, instead of a 500 (a one-click is spooled before it gets here)."""
        log.warning(
            "web: the database did not answer (%s); answered 503",
            type(getattr(exc, "orig", None) or exc).__name__,
        )
        page = render_template(
            "error.html", code=503, title="Please try again in a few minutes", settings=settings
        )
        return page, 503, {"Retry-After": "60"}

    for away in DATABASE_AWAY:
        app.register_error_handler(away, _database_unavailable)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[str, int]:
        code = exc.code or 500
        route = next((r for p, r in RECIPIENT_ROUTES.items() if request.path.startswith(p)), None)
        if route is not None:
            _record_refusal(route, code)
        return render_template("error.html", code=code, title=exc.name, settings=settings), code


def _on_base_url(base_url: str, location: str) -> str:
    """A redirect target on our own configured root, whatever Host the request named: the
    Host header is the client's to choose, so a redirect built from it could send a
    recipient anywhere."""
    target = urlsplit(urljoin(request.path, location))
    path = target.path if target.path.startswith("/") else f"/{target.path}"
    return base_url + path + (f"?{target.query}" if target.query else "")


def _read_chunked_body() -> None:
    """A body without Content-Length (chunked) is read here, up to the limit: over it, 413;
    under it, the request goes on as if it had come with its length. Werkzeug would
    otherwise leave such a form unparsed, or read without bound."""
    environ = request.environ
    if request.method in ("GET", "HEAD", "OPTIONS") or environ.get("CONTENT_LENGTH"):
        return
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    stream = environ["wsgi.input"]
    data = b""
    try:
        while len(data) <= MAX_BODY_BYTES:
            block = stream.read(MAX_BODY_BYTES + 1 - len(data))
            if not block:
                break
            data += block
    except Exception:  # noqa: BLE001 - the server's own framing errors (not all are OSError)
        raise BadRequest("the chunked body could not be read") from None
    if len(data) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(data)
    environ["CONTENT_LENGTH"] = str(len(data))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ.pop("wsgi.input_terminated", None)
    request.__dict__.pop("stream", None)  # werkzeug caches the stream it made


def _record_refusal(route: str, code: int) -> None:
    """Audit a recipient request refused before its token was read (413, 405, ...)."""
    try:
        with session_scope(current_app.extensions["dispatcher.sessions"]) as session:
            outcome = f"refused_{code}"
            if tally_hit(session, request.remote_addr, route, outcome) > 1:
                return  # counted in web_hit_tallies; the first this minute has its event
            record_event(
                session,
                "web_hit",
                hit=client_hit(),
                outcome="not_checked",
                route=route,
                action=f"refused_{code}",
                method=request.method,
            )
    except SQLAlchemyError:
        # The refusal stands either way; the log line names no address (the path holds a token).
        log.warning("could not record a refused %s %s hit", request.method, code, exc_info=True)
