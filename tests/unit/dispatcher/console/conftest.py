from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.console import create_console_app
from dispatcher.console.staff import add_staff, read_password_link, set_password
from dispatcher.db import session_scope
from dispatcher.settings import Settings
from suppression.events import Hit

PASSWORD = "correct horse battery staple"


def make_staff(settings: Settings, sessions: sessionmaker[Session], email: str, role: str) -> None:
    with session_scope(sessions) as session:
        _, link = add_staff(session, settings, email, role, actor="test")
        staff = read_password_link(session, settings, link.rsplit("/", 1)[1])
        set_password(session, staff, PASSWORD, PASSWORD, Hit(ip="127.0.0.1"))


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
