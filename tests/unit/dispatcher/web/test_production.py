"""The production server's shape (``dispatcher web``): where it listens, how many processes
of how many threads, and a clear refusal of a setting it cannot serve. The server itself runs
in the integration tests (test_web_servers, test_web_edge, test_recipient_storm)."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from dispatcher.cli import main
from dispatcher.settings import Settings
from dispatcher.web.production import Recipe, RecipeError, recipe
from tests.conftest import settings_for


def test_defaults_listen_on_loopback_with_a_process_per_core_and_the_settings_threads(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPATCHER_WEB_BIND", raising=False)
    monkeypatch.delenv("DISPATCHER_WEB_WORKERS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    threaded = dataclasses.replace(settings, web_threads=5)
    assert recipe(threaded) == Recipe("127.0.0.1", 8025, 3, 5, access_log=False)


@pytest.mark.parametrize(("cores", "threads"), [(1, 3), (2, 5), (3, 7), (4, 8), (64, 8)])
def test_request_threads_default_to_what_the_cores_can_keep_busy(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, cores: int, threads: int
) -> None:
    """8, or twice the cores plus one below four cores: above that granian warns at start."""
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert settings_for(settings.home).web_threads == threads
    assert settings_for(settings.home, web_threads="16").web_threads == 16


def test_the_environment_sets_the_shape_and_options_win_over_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCHER_WEB_BIND", "0.0.0.0:9000")
    monkeypatch.setenv("DISPATCHER_WEB_WORKERS", "4")
    assert recipe(settings) == Recipe("0.0.0.0", 9000, 4, settings.web_threads)
    given = recipe(settings, bind="[::1]:8080", workers=2, threads=3, access_log=True)
    assert given == Recipe("::1", 8080, 2, 3, access_log=True)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DISPATCHER_WEB_BIND", "8025"),
        ("DISPATCHER_WEB_BIND", "localhost:"),
        ("DISPATCHER_WEB_BIND", ":8025"),
        ("DISPATCHER_WEB_BIND", "localhost:70000"),
        ("DISPATCHER_WEB_BIND", "localhost:http"),
        ("DISPATCHER_WEB_WORKERS", "0"),
        ("DISPATCHER_WEB_WORKERS", "two"),
        ("DISPATCHER_WEB_WORKERS", "-1"),
    ],
)
def test_a_shape_that_cannot_be_served_is_refused_naming_its_setting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(RecipeError) as refused:
        recipe(settings)
    assert variable in str(refused.value) and repr(value) in str(refused.value)


def test_the_command_refuses_a_bad_bind_in_one_line_and_starts_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCHER_HOME", str(settings.home))
    monkeypatch.setenv("DISPATCHER_WEB_BIND", "nowhere")
    done = CliRunner().invoke(main, ["web"])
    assert done.exit_code != 0
    assert "DISPATCHER_WEB_BIND (--bind) must be host:port, not 'nowhere'" in done.output
    assert "Traceback" not in done.output
