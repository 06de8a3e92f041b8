"""Settings that cannot work stop every command at start-up — the worker and the beat
included — with one line naming the setting and the fix, and no traceback (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
CELERY = [sys.executable, "-m", "celery", "-A", "workers"]

# One bad setting of each kind, and what the one line must say.
BAD = {
    "keys": ({"DISPATCHER_SECRET_KEYS": "k1,k2"}, "DISPATCHER_SECRET_KEYS: keys 1, 2 are shorter"),
    "number": ({"DISPATCHER_BATCH_SIZE": "0"}, "DISPATCHER_BATCH_SIZE must be at least 1"),
    "url": ({"DISPATCHER_BROKER_URL": "amqp//mq"}, "DISPATCHER_BROKER_URL: 'amqp"),
    "path": (
        {"DISPATCHER_MAIL_URL": "maildir:///dev/null/outbox"},
        "DISPATCHER_MAIL_URL: /dev/null",
    ),
}
COMMANDS = {
    "dispatcher worker": [str(BIN / "dispatcher"), "worker", "--pool=solo"],
    "dispatcher worker -B": [str(BIN / "dispatcher"), "worker", "--pool=solo", "-B"],
    "dispatcher beat": [str(BIN / "dispatcher"), "beat"],
    "celery worker": [*CELERY, "worker", "--pool=solo"],
    "python -m workers.worker": [sys.executable, "-m", "workers.worker", "--pool=solo"],
    "celery beat": [*CELERY, "beat"],
    "dispatcher campaign list": [str(BIN / "dispatcher"), "campaign", "list"],
    "dispatcher campaign status --json": [
        str(BIN / "dispatcher"),
        "campaign",
        "status",
        "1",
        "--json",
    ],
    "dispatcher db upgrade": [str(BIN / "dispatcher"), "db", "upgrade"],
}


def run(
    command: list[str], tmp_path: Path, bad: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(
        {
            "DISPATCHER_HOME": str(tmp_path / "var"),
            "DISPATCHER_SECRET_KEYS": "test-signing-key-newest-0001",
            **bad,
        }
    )
    try:
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=90, cwd=tmp_path
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} kept running with a setting that cannot work")


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("command", ["dispatcher worker", "dispatcher beat"])
def test_worker_and_beat_stop_with_one_line_per_kind_of_setting(
    tmp_path: Path, command: str, kind: str
) -> None:
    bad, expected = BAD[kind]
    done = run(COMMANDS[command], tmp_path, bad)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: configuration: " + expected)
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "command", sorted(set(COMMANDS) - {"dispatcher worker", "dispatcher beat"})
)
def test_short_keys_stop_every_entry_point(tmp_path: Path, command: str) -> None:
    bad, expected = BAD["keys"]
    done = run(COMMANDS[command], tmp_path, bad)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: configuration: DISPATCHER_SECRET_KEYS: keys 1, 2 are shorter than 16 characters "
        "(of 2): make each key long and random, e.g. "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    ]
    assert not (tmp_path / "var" / "dispatcher.db").exists()  # nothing was done
