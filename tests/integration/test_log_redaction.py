"""Tokens never reach a log: both servers' request logs show ``[token]`` where a link's
token was (a signed link in a log is a key to someone's unsubscribe and preferences)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from dispatcher.db import session_scope
from dispatcher.settings import Settings
from suppression.tokens import LinkPurpose, TokenSigner
from tests.factories import make_contact
from tests.integration.test_web_servers import BIN, one_click, running
from tests.support.web_server import free_port


@pytest.mark.parametrize("server", ["dispatcher serve", "dispatcher web"])
def test_request_logs_carry_no_token(
    server: str, settings: Settings, session_factory, tmp_path: Path
) -> None:
    with session_scope(session_factory) as session:
        ann = make_contact(session, "ann@example.com").address_id
    signer = TokenSigner(settings.secret_keys)
    unsubscribe = signer.sign_link(LinkPurpose.UNSUBSCRIBE, ann, None)
    preferences = signer.sign_link(LinkPurpose.PREFERENCES, ann, None)
    port = free_port()
    command = {
        "dispatcher serve": [str(BIN / "dispatcher"), "serve", "--port", str(port)],
        "dispatcher web": [
            str(BIN / "dispatcher"),
            "web",
            "--workers",
            "1",
            "--access-log",
            "--bind",
            f"127.0.0.1:{port}",
        ],
    }[server]
    log = tmp_path / "server.log"
    with running(command, settings, log, port) as base:
        for path in (f"/u/{unsubscribe}", f"/preferences/{preferences}?token={unsubscribe}"):
            with urllib.request.urlopen(base + path, timeout=10) as page:  # noqa: S310
                assert page.status == 200
        assert one_click(f"{base}/u/{unsubscribe}", "198.51.100.7") == 200
        assert one_click(f"{base}/u/{unsubscribe[:-3]}", "198.51.100.7") == 400
    written = log.read_text()
    assert "/u/[token]" in written and "/preferences/[token]" in written  # it did log
    for secret in (unsubscribe, preferences, unsubscribe[:-3], unsubscribe.split(".")[0]):
        assert secret not in written
    assert "ann@example.com" not in written
