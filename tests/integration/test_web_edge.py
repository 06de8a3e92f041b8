"""The web edge under both servers we ship, over real sockets on 127.0.0.1: slow clients do
not stop one-click unsubscribes, bodies over the limit get 413 however they are framed,
odd numbers get 4xx, and redirects stay on the configured base URL."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from dispatcher.db import session_scope
from dispatcher.settings import Settings
from suppression.models import Suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.factories import make_contact
from tests.integration.test_web_servers import BIN, running
from tests.support.web_server import free_port
from workers.process import wait_until


def _command(server: str, port: int) -> list[str]:
    if server == "dispatcher serve":
        return [str(BIN / "dispatcher"), "serve", "--port", str(port)]
    # The README's production recipe, on a test port with one process of two threads.
    return [
        str(BIN / "dispatcher"),
        "web",
        "--workers",
        "1",
        "--threads",
        "2",
        "--bind",
        f"127.0.0.1:{port}",
    ]


def _head(port: int, raw: bytes, timeout: float = 20.0) -> list[bytes]:
    """Send ``raw`` on a fresh connection; the lines of the answer's head."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(raw)
        answer = b""
        while b"\r\n\r\n" not in answer:
            block = conn.recv(4096)
            if not block:
                break
            answer += block
    return answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def _exchange(port: int, raw: bytes, timeout: float = 20.0) -> bytes:
    """The status line of the answer to ``raw``."""
    return _head(port, raw, timeout)[0]


def _location(port: int, raw: bytes) -> str:
    for line in _head(port, raw):
        if line.lower().startswith(b"location:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("the answer has no Location header")


def _post(path: str, body: bytes, headers: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{headers}\r\n"
    ).encode() + body


def _chunked(body: bytes) -> bytes:
    out = b""
    for start in range(0, len(body), 4000):
        piece = body[start : start + 4000]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


@pytest.fixture
def ann_token(settings: Settings, session_factory) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with session_scope(session_factory) as session:
        ann = make_contact(session, "ann@example.com").address_id
    return ann, TokenSigner(settings.secret_keys).sign_link(LinkPurpose.UNSUBSCRIBE, ann, None)


@pytest.mark.parametrize("server", ["dispatcher serve", "dispatcher web"])
def test_sizes_and_numbers_get_4xx_and_chunked_one_click_works(
    server: str, settings: Settings, session_factory, ann_token, tmp_path: Path
) -> None:
    ann, token = ann_token
    port = free_port()
    one_click = b"List-Unsubscribe=One-Click"
    big = one_click + b"&pad=" + b"x" * 40_000
    with running(_command(server, port), settings, tmp_path / "server.log", port):
        path = f"/u/{token}"
        statuses = {
            "chunked over the limit": _exchange(
                port, _post(path, _chunked(big), "Transfer-Encoding: chunked\r\n")
            ),
            "huge length": _exchange(
                port, _post(path, b"", "Content-Length: 99999999999999999999999999\r\n")
            ),
            # Said, not sent: refused at once, without waiting for a gigabyte.
            "large length": _exchange(port, _post(path, b"", "Content-Length: 1000000000\r\n")),
            "negative length": _exchange(port, _post(path, b"", "Content-Length: -5\r\n")),
            "length in words": _exchange(port, _post(path, b"", "Content-Length: 1e9\r\n")),
            "bad chunk size": _exchange(
                port, _post(path, b"zz\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding: chunked\r\n")
            ),
            "chunk shorter than said": _exchange(
                port, _post(path, b"5\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding: chunked\r\n")
            ),
            "huge since": _exchange(
                port,
                b"GET /affiliates/feed?since=99999999999999999999 HTTP/1.1\r\nHost: x\r\n"
                b"Connection: close\r\n\r\n",
            ),
        }
        codes = {what: int(line.split()[1]) for what, line in statuses.items()}
        assert codes["chunked over the limit"] == 413
        # A length past 2**64 is no number to granian's HTTP parser (400), gunicorn's and
        # werkzeug's too big (413): refused either way, before any body is read.
        assert codes["huge length"] in (400, 413)
        assert codes["large length"] == 413
        assert all(400 <= code < 500 for code in codes.values()), codes
        chunked = _exchange(
            port, _post(path, _chunked(one_click), "Transfer-Encoding: chunked\r\n")
        )
        assert chunked.split()[1] == b"200", chunked
    with session_scope(session_factory) as session:
        reasons = session.scalars(select(Suppression.reason).where(Suppression.address_id == ann))
        assert list(reasons) == ["unsubscribe"]
    assert "Traceback" not in (tmp_path / "server.log").read_text()


@pytest.mark.parametrize("server", ["dispatcher serve", "dispatcher web"])
def test_redirects_use_the_configured_base_url_not_the_host_header(
    server: str, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    with running(_command(server, port), settings, tmp_path / "server.log", port) as base:
        location = _location(
            port,
            b"GET /static//site.css HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        )
    # running() configures DISPATCHER_BASE_URL as the server's own address.
    assert location == f"{base}/static/site.css"


class SlowClient:
    """Opens a connection and sends a request's headers one byte at a time, forever (until
    stopped or ``limit`` seconds): the attack that holds a sync worker per client."""

    def __init__(self, port: int, limit: float = 90.0) -> None:
        self.port = port
        self.limit = limit
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SlowClient:
        self._thread.start()
        return self

    def _run(self) -> None:
        request = b"GET /static/site.css HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 4000
        deadline = time.monotonic() + self.limit
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
                for byte in request:
                    if self._stop.is_set() or time.monotonic() > deadline:
                        return
                    conn.sendall(bytes([byte]))
                    self.sent += 1
                    self._stop.wait(0.2)
        except OSError:
            return  # the server cut us off: fine, that frees its worker too

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


@contextmanager
def slow_clients(port: int, count: int) -> Iterator[list[SlowClient]]:
    clients = [SlowClient(port).start() for _ in range(count)]
    try:
        yield clients
    finally:
        for client in clients:
            client.stop()


def test_slow_clients_do_not_stop_one_click_under_the_production_recipe(
    settings: Settings, session_factory, ann_token, tmp_path: Path
) -> None:
    ann, token = ann_token
    port = free_port()
    with running(_command("dispatcher web", port), settings, tmp_path / "server.log", port):
        # Four times as many trickling clients as the process has request threads.
        with slow_clients(port, 8) as clients:
            wait_until(
                lambda: all(c.sent >= 5 for c in clients),
                timeout=60,
                interval=0.1,
                what="every slow client trickling its headers",
            )
            answer = _exchange(
                port,
                _post(f"/u/{token}", b"List-Unsubscribe=One-Click", "Content-Length: 26\r\n"),
                timeout=20,
            )
            still_trickling = sum(1 for c in clients if c._thread.is_alive())
        assert answer.split()[1] == b"200", answer
        assert still_trickling == 8  # they were still holding their connections
    with session_scope(session_factory) as session:
        assert session.scalar(select(Suppression.reason).where(Suppression.address_id == ann))


def test_dispatcher_serve_closes_a_connection_that_stops_sending(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    command = [str(BIN / "dispatcher"), "serve", "--port", str(port), "--read-timeout", "2"]
    with (
        running(command, settings, tmp_path / "server.log", port),
        socket.create_connection(("127.0.0.1", port), timeout=60) as conn,
    ):
        conn.sendall(b"GET /static/site.css HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            closed = conn.recv(1024)  # a TimeoutError after 60 s fails the test
        except ConnectionResetError:
            closed = b""
        # The server answered (408) or closed; either way it let go of the client.
        assert closed == b"" or closed.startswith(b"HTTP/1.")
