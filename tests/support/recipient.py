"""What a recipient's mail client does: the RFC 8058 one-click POST, through the real pages."""

from __future__ import annotations

from flask import Flask

from dispatcher.settings import Settings
from dispatcher.web import create_app


class Recipient:
    """Posts one-click unsubscribes to the recipient pages of ``settings`` (in process)."""

    def __init__(self, settings: Settings) -> None:
        self.app: Flask = create_app(settings)

    def one_click(self, token: str) -> None:
        client = self.app.test_client()
        response = client.post(
            f"/u/{token}",
            data={"List-Unsubscribe": "One-Click"},
            environ_base={"REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": "recipient-test"},
        )
        assert response.status_code == 200, response.get_data(as_text=True)
