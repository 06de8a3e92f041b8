"""Fixtures every test may use: settings in a temporary home, a migrated database."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import make_engine, make_sessionmaker, upgrade
from dispatcher.settings import PROJECT_ROOT, Settings, load_settings

TEST_KEYS = "test-signing-key-newest-0001,test-signing-key-older-0000"


def settings_for(home: Path, **overrides: str) -> Settings:
    """Embedded settings rooted at ``home``; ``overrides`` are DISPATCHER_* variables."""
    env = {
        "DISPATCHER_HOME": str(home),
        "DISPATCHER_SECRET_KEYS": TEST_KEYS,
        "DISPATCHER_BASE_URL": "http://127.0.0.1:8025",
    }
    env.update({f"DISPATCHER_{k.upper()}": v for k, v in overrides.items()})
    return load_settings(env)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DISPATCHER_* variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("DISPATCHER_"):
            monkeypatch.delenv(key)


def _migrations_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((PROJECT_ROOT / "migrations").rglob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def _migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated with Alembic; each test gets a copy. Kept between sessions
    under the system's temporary folder, keyed by the migrations' content, so the many short
    sessions of a mutation run (scripts/mutation) do not each migrate again."""
    cached = Path(tempfile.gettempdir()) / f"killertracks-migrated-{_migrations_digest()}.db"
    if cached.exists():
        return cached
    home = tmp_path_factory.mktemp("template")
    upgrade(settings_for(home))
    partial = cached.with_suffix(f".{os.getpid()}.partial")
    shutil.copy(home / "dispatcher.db", partial)
    os.replace(partial, cached)  # atomic: a parallel session sees all of it or nothing
    return cached


@pytest.fixture
def settings(tmp_path: Path, _migrated_template: Path) -> Settings:
    home = tmp_path / "var"
    home.mkdir()
    shutil.copy(_migrated_template, home / "dispatcher.db")
    return settings_for(home)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is rolled back after the test."""
    with session_factory() as session:
        session.begin()
        yield session
        session.rollback()


from tests.support.smtp_sink import smtp_sink  # noqa: E402,F401  (fixture for every test)
