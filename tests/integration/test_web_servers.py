"""The recipient pages under both servers they ship with: ``dispatcher serve`` (embedded)
and ``dispatcher web`` (production: granian), each a real process on 127.0.0.1 answering a
one-click POST."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from dispatcher.db import session_scope
from dispatcher.settings import Settings
from suppression.models import Event, Suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.conftest import TEST_KEYS
from tests.factories import make_contact
from tests.support.production import started
from tests.support.web_server import free_port

BIN = Path(sys.executable).parent


@contextmanager
def running(
    command: list[str], settings: Settings, log: Path, port: int, **more: str
) -> Iterator[str]:
    """Start a server process with the test's DISPATCHER_* settings (and ``more``); yield
    its base URL; stop it with SIGTERM."""
    env = {
        **os.environ,
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": TEST_KEYS,
        "DISPATCHER_BASE_URL": f"http://127.0.0.1:{port}",
        **more,
    }
    base = f"http://127.0.0.1:{port}"
    with started(command, env, f"{base}/static/site.css", log, timeout=30):
        yield base


def server_command(server: str, port: int, *options: str) -> list[str]:
    """The command line of ``server`` (the built-in one or the production one) on ``port``."""
    if server == "dispatcher serve":
        return [str(BIN / "dispatcher"), "serve", "--port", str(port)]
    return [str(BIN / "dispatcher"), "web", "--bind", f"127.0.0.1:{port}", *options]


def one_click(url: str, forwarded_for: str, padding: int = 0) -> int:
    request = urllib.request.Request(
        url,
        data=b"List-Unsubscribe=One-Click" + b"&pad=" + b"x" * padding,
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Forwarded-For": forwarded_for,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.parametrize("server", ["dispatcher serve", "dispatcher web"])
def test_each_server_takes_a_one_click_post(
    server: str, settings: Settings, session_factory, tmp_path: Path
) -> None:
    with session_scope(session_factory) as session:
        ann = make_contact(session, "ann@example.com").address_id
    port = free_port()
    shape = ["--workers", "2"] if server == "dispatcher web" else []
    command = server_command(server, port, *shape)
    token = TokenSigner(settings.secret_keys).sign_link(LinkPurpose.UNSUBSCRIBE, ann, None)
    log = tmp_path / "server.log"
    # One proxy in front: only the production server is deployed behind one (README).
    proxies = "1" if server == "dispatcher web" else "0"
    with running(command, settings, log, port, DISPATCHER_TRUSTED_PROXIES=proxies) as base:
        assert one_click(f"{base}/u/{token}", "198.51.100.7") == 200
        assert one_click(f"{base}/u/{token}", "198.51.100.7") == 200
        assert one_click(f"{base}/u/{token[:-2]}", "198.51.100.7") == 400
        assert one_click(f"{base}/u/{token}", "198.51.100.7", padding=200_000) == 413
    with session_scope(session_factory) as session:
        reasons = session.scalars(
            select(Suppression.reason).where(Suppression.address_id == ann)
        ).all()
        hits = session.execute(
            select(Event.ip, Event.outcome).where(Event.kind == "web_hit").order_by(Event.id)
        ).all()
    assert reasons == ["unsubscribe"]
    # Only the production server was told a proxy stands in front; the other ignores it.
    ip = "198.51.100.7" if server == "dispatcher web" else "127.0.0.1"
    assert [tuple(h) for h in hits] == [
        (ip, "valid"),
        (ip, "valid"),
        (ip, "tampered"),
        (ip, "not_checked"),
    ]
    assert "ann@example.com" not in log.read_text()


@pytest.mark.parametrize("server", ["dispatcher serve", "dispatcher web"])
def test_each_server_writes_the_page_views_it_counted_when_stopped(
    server: str, settings: Settings, session_factory, tmp_path: Path
) -> None:
    """Page views are counted in memory and written in batches; a stop with SIGTERM (as
    systemd stops a unit) writes them. The writer is told to wait an hour, so only the stop
    can have written them."""
    with session_scope(session_factory) as session:
        ann = make_contact(session, "ann@example.com").address_id
    port = free_port()
    command = server_command(server, port)
    token = TokenSigner(settings.secret_keys).sign_link(LinkPurpose.UNSUBSCRIBE, ann, None)
    log = tmp_path / "server.log"
    with running(command, settings, log, port, DISPATCHER_WEB_HIT_FLUSH_SECONDS="3600") as base:
        for _ in range(3):
            with urllib.request.urlopen(f"{base}/u/{token}", timeout=10) as page:  # noqa: S310
                assert page.status == 200
        with session_scope(session_factory) as session:
            assert session.scalars(select(Event).where(Event.kind == "web_hit")).all() == []
    with session_scope(session_factory) as session:
        hits = session.execute(
            select(Event.count, Event.detail).where(Event.kind == "web_hit")
        ).all()
    assert [(n, detail["action"]) for n, detail in hits] == [(3, "shown")]
