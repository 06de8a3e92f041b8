"""The web app: recipient pages and affiliate downloads. ``create_app(settings)`` builds it.

Served by the built-in server on the embedded defaults (``dispatcher serve``) and by
gunicorn in production (``gunicorn 'dispatcher.web:create_app()'``).
"""

from __future__ import annotations

from flask import Flask, Response, render_template
from werkzeug.exceptions import HTTPException

from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.settings import Settings, load_settings

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


def create_app(settings: Settings | None = None) -> Flask:
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
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_BODY_BYTES
    engine = make_engine(settings.database_url)
    app.extensions["dispatcher.sessions"] = make_sessionmaker(engine)

    from dispatcher.web import affiliates, public

    app.register_blueprint(public.bp)
    app.register_blueprint(affiliates.bp)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[str, int]:
        return render_template(
            "error.html", code=exc.code, title=exc.name, settings=settings
        ), exc.code or 500

    return app
