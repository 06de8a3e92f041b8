"""Fixtures every test may use: settings in a temporary home, a migrated database."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import make_engine, make_sessionmaker, upgrade
from dispatcher.settings import PROJECT_ROOT, Settings, load_settings

TEST_KEYS = "test-signing-key-newest-0001,test-signing-key-older-0000"

# Under scripts/mutation (mutmut sets MUTANT_UNDER_TEST in every phase) each property test runs
# this many examples (MUTATION_MAX_EXAMPLES overrides), always the same ones: a mutant is run
# against hundreds of tests, and a verdict must not change between two runs because hypothesis
# drew other examples. The deterministic tests beside them carry the verdicts (README).
MUTATION_MAX_EXAMPLES = int(os.environ.get("MUTATION_MAX_EXAMPLES", "10"))


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if "MUTANT_UNDER_TEST" not in os.environ:
        return
    from hypothesis import Phase
    from hypothesis import settings as hypothesis_settings

    # Fastest first (mutmut's timings of the clean run, in its working folder): with -x a
    # killed mutant stops at the first failing test, so the cheap ones should get their go.
    stats = Path("mutmut-stats.json")
    if stats.exists():
        duration = json.loads(stats.read_text(encoding="utf-8")).get("duration_by_test", {})
        items.sort(key=lambda item: duration.get(item.nodeid, 0.0))
    for item in items:
        test = getattr(item, "obj", None)
        chosen = getattr(test, "_hypothesis_internal_use_settings", None)
        if chosen is not None:
            test._hypothesis_internal_use_settings = hypothesis_settings(  # type: ignore[union-attr]
                chosen,
                max_examples=min(chosen.max_examples, MUTATION_MAX_EXAMPLES),
                derandomize=True,
                database=None,
                # A failing example kills the mutant as it is: shrinking it costs seconds.
                phases=(Phase.explicit, Phase.generate),
            )


def pytest_sessionstart(session: pytest.Session) -> None:
    """In a mutant's run, forget what the project's caches kept (statements built once, e.g.
    ``_record_statements``): they were filled before mutmut forked this process, by the
    original code, and would hide a mutant of everything they call."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        _forget_project_caches()


@pytest.fixture(autouse=True)
def _built_afresh_for_each_test_under_mutation() -> None:
    """Under mutmut, each test builds the statements it uses itself: mutmut's first phase
    records which tests call each function, and a statement built once per process would be
    credited to the first test only (its mutants then run no test, or too few)."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        _forget_project_caches()


def _forget_project_caches() -> None:
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in {"suppression", "dispatcher", "workers"}:
            for value in list(vars(module).values()):
                if isinstance(value, functools._lru_cache_wrapper):
                    value.cache_clear()


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
