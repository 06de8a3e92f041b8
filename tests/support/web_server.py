"""The web app served over real HTTP on 127.0.0.1, in a background thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from flask import Flask
from werkzeug.serving import make_server

from dispatcher.settings import Settings
from dispatcher.web import create_app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve(
    settings: Settings, port: int | None = None, *, trusted_proxies: int = 0
) -> Iterator[str]:
    """Serve ``create_app(settings)``; yields its base URL. Threaded, like production.

    ``trusted_proxies=1`` believes one ``X-Forwarded-For`` hop, as behind the TLS proxy
    (lets a test speak for many client IPs). A base URL on 127.0.0.1 is moved to the served
    port, since redirects are built on the configured base URL (never the Host header)."""
    port = port or free_port()
    if urlsplit(settings.base_url).hostname == "127.0.0.1":
        settings = settings.replace(base_url=f"http://127.0.0.1:{port}")
    with serve_app(create_app(settings, trusted_proxies=trusted_proxies), port) as url:
        yield url


@contextmanager
def serve_app(app: Flask, port: int | None = None) -> Iterator[str]:
    """Serve any of our Flask apps on 127.0.0.1 in a thread; yields its base URL."""
    server = make_server("127.0.0.1", port or free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
