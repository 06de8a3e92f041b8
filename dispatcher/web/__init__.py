"""The web app: recipient pages and affiliate downloads. ``create_app(settings)`` builds it."""

from __future__ import annotations

from flask import Flask

from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app for ``settings`` (read from the environment when not given)."""
    settings = settings or load_settings()
    app = Flask(__name__, template_folder=str(settings.templates_dir / "web"))
    app.config["DISPATCHER_SETTINGS"] = settings
    engine = make_engine(settings.database_url)
    app.extensions["dispatcher.sessions"] = make_sessionmaker(engine)

    from dispatcher.web import affiliates, public

    app.register_blueprint(public.bp)
    app.register_blueprint(affiliates.bp)
    return app
