"""Staff accounts and a served console for tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.console import create_console_app
from dispatcher.console.staff import add_staff, read_password_link, set_password
from dispatcher.db import session_scope
from dispatcher.settings import Settings
from suppression.events import Hit
from tests.support.web_server import serve_app

PASSWORD = "correct horse battery staple"


def make_staff(settings: Settings, sessions: sessionmaker[Session], email: str, role: str) -> None:
    """A staff member whose password is PASSWORD, set through its own one-time link."""
    with session_scope(sessions) as session:
        _, link = add_staff(session, settings, email, role, actor="test")
        staff = read_password_link(session, settings, link.rsplit("/", 1)[1])
        set_password(session, staff, PASSWORD, PASSWORD, Hit(ip="127.0.0.1"))


@contextmanager
def serve_console(settings: Settings) -> Iterator[str]:
    """The console over real HTTP on 127.0.0.1 (threaded); yields its base URL."""
    with serve_app(create_console_app(settings)) as url:
        yield url
