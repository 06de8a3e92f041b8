"""The staff console: a Flask app of its own, separate from the recipient pages.

``dispatcher console`` serves it on the built-in server; in production run it under gunicorn
on the internal network, with the same DISPATCHER_* environment::

    gunicorn -c python:dispatcher.console.gunicorn_conf \\
        'dispatcher.console:create_console_app(trusted_proxies=1)'

Views call the services the CLI calls (``dispatcher.campaigns.services``, the importer, the
suppression rules); none re-implements them.
"""

from __future__ import annotations

from flask import Flask

from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.ops.logs import setup_logging
from dispatcher.settings import Settings, load_settings


def create_console_app(settings: Settings | None = None, *, trusted_proxies: int = 0) -> Flask:
    """Build the console for ``settings`` (read from the environment when not given)."""
    if settings is None:
        # The production entry point (gunicorn): this process's logging is set up here.
        settings = load_settings()
        setup_logging(settings.log_format, settings.log_level)
    folder = settings.templates_dir / "console"
    app = Flask(
        __name__,
        template_folder=str(folder),
        static_folder=str(folder / "static"),
        static_url_path="/static",
    )
    app.config["DISPATCHER_SETTINGS"] = settings
    engine = make_engine(settings.database_url)
    app.extensions["dispatcher.sessions"] = make_sessionmaker(engine)

    from dispatcher.console import security, views
    from dispatcher.ops import health

    # /healthz and /readyz for the load balancer: no session, no sign-in, no audit.
    health.install(app, settings, engine)
    security.install(app, settings, trusted_proxies)
    app.register_blueprint(views.bp)
    views.install_errors(app)
    return app
