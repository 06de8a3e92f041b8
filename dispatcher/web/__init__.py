"""The web app: recipient pages and affiliate downloads. ``create_app(settings)`` builds it.

Served by the built-in server on the embedded defaults (``dispatcher serve``) and by
gunicorn in production::

    gunicorn -w 4 -b 127.0.0.1:8025 'dispatcher.web:create_app(trusted_proxies=1)'

behind the TLS proxy that ``DISPATCHER_BASE_URL`` names (``/healthz`` and ``/readyz`` for
the load balancer: README, "Operations") (``trusted_proxies`` = how many
proxies append to ``X-Forwarded-For``, so the audit log records the recipient's IP).
"""

from __future__ import annotations

from flask import Flask

from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.settings import Settings, load_settings
from dispatcher.web import security


def create_app(settings: Settings | None = None, *, trusted_proxies: int = 0) -> Flask:
    """Build the Flask app for ``settings`` (read from the environment when not given)."""
    settings = settings or load_settings()
    web = settings.templates_dir / "web"
    app = Flask(
        __name__,
        template_folder=str(web),
        static_folder=str(web / "static"),
        static_url_path="/static",
    )
    app.config["DISPATCHER_SETTINGS"] = settings
    engine = make_engine(settings.database_url)
    app.extensions["dispatcher.sessions"] = make_sessionmaker(engine)

    from dispatcher.ops import health
    from dispatcher.ops.logs import setup_logging
    from dispatcher.web import affiliates, public, signup

    setup_logging(settings.log_format, settings.log_level)
    health.install(app, settings, engine)

    app.register_blueprint(public.bp)
    app.register_blueprint(affiliates.bp)
    app.register_blueprint(signup.bp)
    security.install(app, settings, trusted_proxies)
    return app
