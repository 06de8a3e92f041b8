"""The web app served over real HTTP on 127.0.0.1, in a background thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
    (lets a test speak for many client IPs)."""
    app = create_app(settings, trusted_proxies=trusted_proxies)
    server = make_server("127.0.0.1", port or free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
