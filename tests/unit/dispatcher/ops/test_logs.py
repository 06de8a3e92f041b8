"""The logging set-up: text or JSON lines, ids from the context, nothing personal."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from dispatcher.ops import logs
from dispatcher.settings import SettingsError
from suppression.tokens import LinkPurpose, TokenSigner
from tests.conftest import TEST_KEYS, settings_for


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_ids_of_the_context(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup_logging("json", "INFO")
    log = logging.getLogger("dispatcher.test")
    log.info("outside")
    with logs.log_context(task_id="t-1", campaign_id=7, batch="10-19"):
        log.info("batch %s done", "10-19")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    log.debug("below the level")
    outside, inside, failed = (json.loads(line) for line in _lines(capsys))
    assert "campaign_id" not in outside and outside["message"] == "outside"
    assert inside["campaign_id"] == 7 and inside["batch"] == "10-19"
    assert inside["task_id"] == "t-1" and inside["level"] == "info"
    assert inside["logger"] == "dispatcher.test" and inside["message"] == "batch 10-19 done"
    assert "RuntimeError: boom" in failed["exception"] and failed["level"] == "error"


def test_text_is_the_default_and_shows_the_ids(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup_logging()
    with logs.log_context(campaign_id=3):
        logging.getLogger("x").warning("slow relay")
    (line,) = _lines(capsys)
    assert line.endswith("WARNING x [campaign_id=3]: slow relay")


def test_setting_up_twice_keeps_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup_logging("json")
    logs.setup_logging("text")
    logging.getLogger("x").warning("once")
    assert len(_lines(capsys)) == 1


def test_no_address_token_or_password_gets_through(capsys: pytest.CaptureFixture[str]) -> None:
    token = TokenSigner(TEST_KEYS.split(",")).sign_link(LinkPurpose.UNSUBSCRIBE, 42, 7)
    logs.setup_logging("json")
    log = logging.getLogger("leaky")
    log.warning("mail to %s refused", "Ann.Smith+x@example.com")
    log.warning("link https://mail.example.com/u/%s clicked", token)
    log.warning("relay smtp://user:s3cret-pass@relay.example.com:587 down")
    try:
        raise ValueError("bad address bob@example.org")
    except ValueError:
        log.exception("import failed")
    written = capsys.readouterr().err
    for secret in ("Ann.Smith", "example.com/u/" + token, token, "s3cret-pass", "bob@"):
        assert secret not in written
    messages = [json.loads(line)["message"] for line in written.splitlines()]
    assert messages[0] == "mail to <address> refused"
    assert messages[1] == "link https://mail.example.com/u/<token> clicked"
    assert "smtp://user:<redacted>@relay.example.com:587" in messages[2]
    assert "<address>" in json.loads(written.splitlines()[3])["exception"]


def test_ordinary_words_and_ids_are_left_alone() -> None:
    text = (
        "Task workers.tasks.send_batch[346fe861-591e-476b-b31a-ea4fe735eb25] campaign 12 "
        "batch 100-299 claimed 200 (dispatch.notices) in /tmp/test_metrics_and_json_logs_0 "
        "claim 9f3db560108c4dc1bcc5c2a63a56e9e3"
    )
    assert logs.redact(text) == text


def test_log_settings_are_checked(tmp_path) -> None:
    assert settings_for(tmp_path, log_format="JSON").log_format == "json"
    with pytest.raises(SettingsError, match="DISPATCHER_LOG_FORMAT must be one of text, json"):
        settings_for(tmp_path, log_format="xml")
    with pytest.raises(SettingsError, match="DISPATCHER_LOG_LEVEL"):
        settings_for(tmp_path, log_level="chatty")


def test_a_database_error_carries_the_sql_but_not_its_parameters(tmp_path) -> None:
    """An IP or a browser in a failed statement's parameters would reach the log with the
    error (the page-view writer logs its failures): engines are made to hide them."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from dispatcher.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text("INSERT INTO no_such_table VALUES (:ip)"), {"ip": "198.51.100.7"})
    engine.dispose()
    assert "no_such_table" in str(caught.value)
    assert "198.51.100.7" not in str(caught.value)
