"""Affiliate downloads over real HTTP: the signature AND the affiliate's own credential."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import urllib.error
import urllib.request
from pathlib import Path

from dispatcher.affiliates import add_affiliate, export
from dispatcher.db import session_scope
from dispatcher.settings import Settings
from suppression.tokens import LinkPurpose, TokenSigner
from tests.support.web_server import free_port, serve
from tests.unit.dispatcher.test_affiliates import shareable


def fetch(url: str, user: str | None = None, password: str | None = None) -> tuple[int, bytes]:
    headers = {}
    if user is not None:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        )
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def test_download_needs_signature_and_own_credential(
    settings: Settings, session_factory, tmp_path: Path
) -> None:
    port = free_port()
    local = settings.replace(base_url=f"http://127.0.0.1:{port}")
    with session_scope(session_factory) as session:
        shareable(session, "ann@example.com")
        _, one = add_affiliate(
            session, "label-one", contact="a@one.example", fields="email", actor="t"
        )
        _, two = add_affiliate(
            session, "label-two", contact="a@two.example", fields="email", actor="t"
        )
    release = export(session_factory, local, "label-one", actor="staff")
    token = release.url.rsplit("/", 1)[1]
    signer = TokenSigner(local.secret_keys)
    with serve(local, port) as base:
        status, body = fetch(release.url, "label-one", one)
        assert status == 200
        assert list(csv.reader(io.StringIO(body.decode()))) == [["email"], ["ann@example.com"]]
        assert hashlib.sha256(body).hexdigest() == release.sha256

        refused = {
            "no credential": fetch(release.url),
            "wrong credential": fetch(release.url, "label-one", two),
            "other affiliate": fetch(release.url, "label-two", two),
            "tampered": fetch(f"{base}/affiliates/download/{token[:-3]}abc", "label-one", one),
            "foreign key": fetch(
                f"{base}/affiliates/download/"
                + TokenSigner(["someone-elses-key-0123456"]).sign_timed(
                    LinkPurpose.AFFILIATE_DOWNLOAD, {"r": release.release_id, "a": 1}
                ),
                "label-one",
                one,
            ),
            "wrong purpose": fetch(
                f"{base}/affiliates/download/" + signer.sign_link(LinkPurpose.UNSUBSCRIBE, 1, 1),
                "label-one",
                one,
            ),
        }
        expired = settings.replace(affiliate_link_seconds=-1)
    with serve(expired) as base_expired:
        refused["expired"] = fetch(f"{base_expired}/affiliates/download/{token}", "label-one", one)
    for case, (status, body) in refused.items():
        assert status in (401, 403), case
        assert b"ann@example.com" not in body, case
    assert refused["expired"][1].startswith(b"This download link is not valid (this link has")


def test_feed_over_http_is_authenticated(settings: Settings, session_factory) -> None:
    with session_scope(session_factory) as session:
        _, credential = add_affiliate(
            session, "label-one", contact="a@one.example", fields="email", actor="t"
        )
    with serve(settings) as base:
        assert fetch(f"{base}/affiliates/feed")[0] == 401
        assert fetch(f"{base}/affiliates/feed", "label-one", "nope")[0] == 401
        status, body = fetch(
            f"{base}/affiliates/feed?since=2020-01-01T00:00:00%2B00:00", "label-one", credential
        )
        assert status == 200 and body == b""
        assert fetch(f"{base}/affiliates/feed?since=yesterday", "label-one", credential)[0] == 400
