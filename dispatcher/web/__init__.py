"""The web app: recipient pages and affiliate downloads. ``create_app(settings)`` builds it.

Served by the built-in server on the embedded defaults (``dispatcher serve``) and by
granian in production, processes of request threads (``dispatcher/web/production.py``)::

    dispatcher web

behind the TLS proxy that ``DISPATCHER_BASE_URL`` names (``DISPATCHER_TRUSTED_PROXIES`` =
how many proxies append to ``X-Forwarded-For``, so the audit log records the recipient's IP).
``/healthz`` and ``/readyz`` are for the load balancer (README, "Operations").
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.ops.logs import setup_logging
from dispatcher.settings import Settings, load_settings
from dispatcher.web import redact, security
from dispatcher.web.hits import HitCounter
from suppression.tokens import TokenSigner

# Connections beyond the request threads: the page-view writer (dispatcher/web/hits.py), the
# spool drainer and the readiness check.
POOL_SPARE = 3
# How long a web request waits for a row another transaction holds (PostgreSQL's
# lock_timeout on the app's connections). Our own transactions hold rows for milliseconds;
# a staff cancel of a large campaign holds all its queued rows for as long as one UPDATE of
# them takes (minutes at millions). A one-click that would wait longer is spooled and
# answered 202, and applied once the rows are free: locks held elsewhere never take the
# few request threads, which every other recipient's click is waiting for.
LOCK_TIMEOUT_MS = 2000
# How long one statement of a web request may run (PostgreSQL's statement_timeout on the
# app's connections). A recipient page's statements take a millisecond; one that runs for
# seconds (a server under more load than it can carry, a plan gone wrong) ends with the
# answer a lost database gets: the page 503, a one-click spooled and answered 202. Without
# it such statements would hold the request threads, as lock waits did. A request that
# reads a whole list (the affiliates' feed) lifts it for its own transaction
# (``dispatcher.db.lift_statement_timeout``).
STATEMENT_TIMEOUT_MS = 5000


def web_pool(settings: Settings) -> dict[str, Any]:
    """The database pool of one web process: a connection for each request thread
    (``dispatcher web`` hands its workers the thread count it runs them with as
    ``web_threads``, see ``dispatcher/web/production.py``) and a few spare, all kept open,
    each waiting at most :data:`LOCK_TIMEOUT_MS` for a lock and running a statement for at
    most :data:`STATEMENT_TIMEOUT_MS`.
    A pool smaller than the threads opens and closes a connection for every request past
    it (PostgreSQL saw 165 new connections in 15 s under load).
    Overflow connections are closed when returned, so they are for accidents only."""
    if not settings.database_url.startswith("postgresql"):
        return {}
    return {
        "pool_size": settings.web_threads + POOL_SPARE,
        "max_overflow": 4,
        "connect_args": {
            "options": f"-c lock_timeout={LOCK_TIMEOUT_MS}"
            f" -c statement_timeout={STATEMENT_TIMEOUT_MS}"
        },
    }


def create_app(settings: Settings | None = None, *, trusted_proxies: int | None = None) -> Flask:
    """Build the Flask app for ``settings`` (read from the environment when not given).

    ``trusted_proxies`` overrides the setting of that name (``DISPATCHER_TRUSTED_PROXIES``).
    """
    if settings is None:
        # The production entry point (a worker of `dispatcher web`): its logging is set up here.
        settings = load_settings()
        setup_logging(settings.log_format, settings.log_level)
    if trusted_proxies is None:
        trusted_proxies = settings.trusted_proxies
    web = settings.templates_dir / "web"
    app = Flask(
        __name__,
        template_folder=str(web),
        static_folder=str(web / "static"),
        static_url_path="/static",
    )
    app.config["DISPATCHER_SETTINGS"] = settings
    engine = make_engine(settings.database_url, **web_pool(settings))
    sessions = make_sessionmaker(engine)
    app.extensions["dispatcher.sessions"] = sessions
    # Page views are counted here and written in batches (dispatcher/web/hits.py).
    app.extensions["dispatcher.hits"] = HitCounter(sessions, every=settings.web_hit_flush_seconds)
    # Built once per process: every recipient link is verified with it.
    app.extensions["dispatcher.signer"] = TokenSigner(settings.secret_keys)

    from dispatcher.ops import health
    from dispatcher.web import affiliates, providers, public, signup

    health.install(app, settings, engine)

    app.register_blueprint(public.bp)
    app.register_blueprint(affiliates.bp)
    app.register_blueprint(signup.bp)
    app.register_blueprint(providers.bp)
    security.install(app, settings, trusted_proxies)
    from dispatcher.inbound.drain import drain_if_pending

    drain_if_pending(app)
    redact.install(app)
    return app
