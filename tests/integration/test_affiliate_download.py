"""Affiliate downloads over real HTTP: the signature AND the affiliate's own credential."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import itsdangerous.timed
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.settings import Settings
from dispatcher.sharing.affiliates import add_affiliate, disable_affiliate
from dispatcher.sharing.export import export
from suppression.address import address_digest
from suppression.models import Event
from suppression.tokens import LinkPurpose, TokenSigner
from tests.support.backends import Backend, make_backend
from tests.support.web_server import free_port, serve
from tests.unit.dispatcher.sharing.test_affiliates import shareable, unsubscribe

Serve = Callable[[Settings], AbstractContextManager[str]]


@pytest.fixture
def web() -> Serve:
    """``create_app(settings)`` on 127.0.0.1 at a free port (werkzeug's make_server in a
    background thread, shut down when the block ends); yields its base URL."""
    return serve


@pytest.fixture(params=["sqlite", "postgres-rabbitmq"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A freshly migrated database on SQLite and on PostgreSQL."""
    with make_backend(request.param, tmp_path / "var") as backend:
        yield backend


def fetch(
    url: str, user: str | None = None, password: str | None = None, *, bearer: str | None = None
) -> tuple[int, bytes]:
    headers = {"User-Agent": "affiliate-test/1"}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def signed_ago(signer: TokenSigner, payload: dict[str, object], seconds: float) -> str:
    """A download token as ``signer`` made it ``seconds`` ago (itsdangerous reads the clock
    when it signs; the lifetime itself stays what the settings say)."""
    past = time.time() - seconds
    with mock.patch.object(itsdangerous.timed, "time", SimpleNamespace(time=lambda: past)):
        return signer.sign_timed(LinkPurpose.AFFILIATE_DOWNLOAD, payload)


def test_download_needs_signature_and_own_credential(db: Backend, web: Serve) -> None:
    port = free_port()
    local = db.settings.replace(base_url=f"http://127.0.0.1:{port}")
    engine = make_engine(local.database_url)
    try:
        check_download(local, port, make_sessionmaker(engine), web)
    finally:
        engine.dispose()


def check_download(local: Settings, port: int, sessions: sessionmaker[Session], web: Serve) -> None:
    with session_scope(sessions) as session:
        shareable(session, "ann@example.com")
        _, one = add_affiliate(
            session, "label-one", contact="a@one.example", fields="email", actor="t"
        )
        _, two = add_affiliate(
            session, "label-two", contact="a@two.example", fields="email", actor="t"
        )
    release = export(sessions, local, "label-one", actor="staff")
    token = release.url.rsplit("/", 1)[1]
    signer = TokenSigner(local.secret_keys)
    with serve(local, port) as base:
        status, body = fetch(release.url, "label-one", one)
        assert status == 200
        assert list(csv.reader(io.StringIO(body.decode()))) == [["email"], ["ann@example.com"]]
        assert hashlib.sha256(body).hexdigest() == release.sha256
        assert fetch(release.url, bearer=one) == (200, body)

        refused = {
            "no credential": fetch(release.url),
            "wrong credential": fetch(release.url, "label-one", two),
            "other affiliate": fetch(release.url, "label-two", two),
            "other affiliate, bearer": fetch(release.url, bearer=two),
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
        # The same release's link as it was signed a day longer ago than links live.
        payload = signer.read_timed(LinkPurpose.AFFILIATE_DOWNLOAD, token, 60)
        old = signed_ago(signer, payload, local.affiliate_link_seconds + 86400)
        refused["expired"] = fetch(f"{base}/affiliates/download/{old}", "label-one", one)
    for case, (status, body) in refused.items():
        assert status in (401, 403), case
        assert b"ann@example.com" not in body, case
    assert refused["expired"][1].startswith(b"This download link is not valid (this link has")
    assert refused["other affiliate"][1] == b"This download link was not made for you.\n"
    assert refused["no credential"][0] == 401

    with session_scope(sessions) as session:
        outcomes = session.execute(
            select(Event.outcome, Event.ip, Event.user_agent, Event.detail)
            .where(Event.kind == "affiliate_download")
            .order_by(Event.id)
        ).all()
    audited = [
        "served",
        "served",
        "no_credential",
        "bad_credential",
        "other_affiliate",
        "other_affiliate",
        "tampered",
        "unknown_key",
        "tampered",
        "expired",
    ]
    # A refusal repeated from one network within a minute (the second bad link) is only
    # tallied; its own event appears when the minute turned between the two.
    got = [o for o, *_ in outcomes]
    assert got in (audited, audited[:8] + audited[9:])
    assert all(ip == "127.0.0.1" and ua == "affiliate-test/1" for _, ip, ua, _ in outcomes)
    assert outcomes[0][3]["release_id"] == release.release_id


def test_altered_or_disabled_gets_nothing(settings: Settings, session_factory, web: Serve) -> None:  # type: ignore[no-untyped-def]
    with session_scope(session_factory) as session:
        shareable(session, "ann@example.com")
        _, one = add_affiliate(
            session, "label-one", contact="a@one.example", fields="email", actor="t"
        )
    release = export(session_factory, settings, "label-one", actor="staff")
    path = release.path
    with web(settings) as base:
        url = f"{base}/affiliates/download/{release.url.rsplit('/', 1)[1]}"
        path.write_text(path.read_text() + "mallory@example.com\r\n")
        status, body = fetch(url, "label-one", one)
        assert status == 410 and b"example.com" not in body
        with session_scope(session_factory) as session:
            disable_affiliate(session, "label-one", actor="t")
        status, body = fetch(url, "label-one", one)
        assert status == 403 and b"disabled" in body


def test_feed_over_http_is_authenticated_and_names_only_what_was_shared(
    settings: Settings, session_factory: sessionmaker[Session], web: Serve
) -> None:
    with session_scope(session_factory) as session:
        ann = shareable(session, "ann@example.com")
        bob = shareable(session, "bob@example.com")
        _, credential = add_affiliate(
            session, "label-one", contact="a@one.example", fields="email", actor="t"
        )
    with web(settings) as base:
        assert fetch(f"{base}/affiliates/feed")[0] == 401
        assert fetch(f"{base}/affiliates/feed", "label-one", "nope")[0] == 401
        assert fetch(f"{base}/affiliates/feed", bearer="label-one.nope")[0] == 401
        unsubscribe(settings, session_factory, bob)  # before any export: never shared
        export(session_factory, settings, "label-one", actor="staff")
        unsubscribe(settings, session_factory, ann)
        status, body = fetch(f"{base}/affiliates/feed", bearer=credential)
        assert (status, body) == (200, f"{address_digest('ann@example.com')}\n".encode())
        status, body = fetch(
            f"{base}/affiliates/feed?since=2020-01-01T00:00:00%2B00:00", "label-one", credential
        )
        assert (status, body) == (200, f"{address_digest('ann@example.com')}\n".encode())
        assert fetch(f"{base}/affiliates/feed?since=yesterday", "label-one", credential)[0] == 400
        assert fetch(f"{base}/affiliates/feed?since=2020-01-01", "label-one", credential)[0] == 400
