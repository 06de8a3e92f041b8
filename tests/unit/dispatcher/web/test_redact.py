"""The log filter every server logger and the app's logger carry: tokens become ``[token]``."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from dispatcher.settings import Settings
from dispatcher.web import create_app
from dispatcher.web.redact import redact
from suppression.tokens import LinkPurpose, TokenSigner

TOKEN = "MTIzNDU2.Zm9vYmFy-_~x"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f'"GET /u/{TOKEN} HTTP/1.1" 200 -', '"GET /u/[token] HTTP/1.1" 200 -'),
        (f"POST /preferences/{TOKEN}?x=1", "POST /preferences/[token]?x=1"),
        (f"/affiliates/download/{TOKEN}", "/affiliates/download/[token]"),
        (f"/static/site.css?token={TOKEN}&a=1", "/static/site.css?token=[token]&a=1"),
        ("/affiliates/feed?since=2026-01-01", "/affiliates/feed?since=2026-01-01"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.mark.parametrize(
    "logger", ["werkzeug", "granian.access", "_granian", "gunicorn.access", "gunicorn.error"]
)
def test_server_loggers_redact_once_the_app_is_built(
    app: Flask, logger: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    logging.getLogger(logger).info('"%s" %s %s', f"GET /u/{TOKEN} HTTP/1.1", 200, "-")
    logging.getLogger(logger).info("%(r)s", {"r": f"GET /preferences/{TOKEN} HTTP/1.1"})
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged and logged.count("[token]") == 2


def test_an_error_in_a_view_is_logged_without_the_token(
    app: Flask, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Flask logs ``Exception on <path>`` with a traceback; both are redacted."""
    token = TokenSigner(settings.secret_keys).sign_link(LinkPurpose.PREFERENCES, 1, None)

    @app.get("/preferences/<token>/boom")
    def boom(token: str) -> str:
        raise RuntimeError(f"failed for /preferences/{token}")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    caplog.set_level(logging.ERROR)
    assert app.test_client().get(f"/preferences/{token}/boom").status_code == 500
    assert app.test_client().get(f"/preferences/{token}x").status_code == 400
    record = next(r for r in caplog.records if r.exc_info)
    formatted = logging.Formatter().format(record)
    assert "RuntimeError" in formatted and "/preferences/[token]" in formatted
    assert token not in formatted
