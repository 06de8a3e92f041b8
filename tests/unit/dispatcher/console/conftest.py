from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.console import create_console_app
from dispatcher.settings import Settings
from tests.support.console import PASSWORD, make_staff

__all__ = ["PASSWORD", "make_staff"]


def csrf(client: FlaskClient, path: str = "/sign-in") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


@pytest.fixture
def app(settings: Settings) -> Flask:
    app = create_console_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def signed_in(
    app: Flask, settings: Settings, session_factory: sessionmaker[Session]
) -> Callable[[str], FlaskClient]:
    """A client signed in as a new staff member with ``role``."""

    def sign_in(role: str, email: str | None = None) -> FlaskClient:
        email = email or f"{role}@staff.example"
        make_staff(settings, session_factory, email, role)
        client = app.test_client()
        token = csrf(client)
        response = client.post(
            "/sign-in", data={"email": email, "password": PASSWORD, "csrf_token": token}
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        return client

    return sign_in


def form_token(client: FlaskClient, path: str) -> str:
    return csrf(client, path)


def post(client: FlaskClient, path: str, data: dict[str, Any], page: str) -> Any:
    return client.post(path, data={**data, "csrf_token": form_token(client, page)})
