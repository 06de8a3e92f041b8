"""Guessing affiliate credentials is limited per network and per affiliate, with counts in
the database that every web worker shares; bad links are tallied, not audited one by one."""

from __future__ import annotations

import threading

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.db import session_scope
from dispatcher.models import WebHitTally
from dispatcher.settings import Settings
from dispatcher.sharing.affiliates import add_affiliate
from dispatcher.web import create_app, limits
from suppression.models import Event


@pytest.fixture
def credential(session_factory: sessionmaker[Session]) -> str:
    with session_scope(session_factory) as session:
        _, secret = add_affiliate(
            session, "labelco", contact="ops@labelco.example", fields="email", actor="test"
        )
    return secret


def _client(settings: Settings, proxies: int = 1) -> FlaskClient:
    # A fresh app is another worker process: nothing in its memory carries over.
    return create_app(settings, trusted_proxies=proxies).test_client()


def _feed(client: FlaskClient, ip: str, secret: str) -> tuple[int, str | None]:
    response = client.get(
        "/affiliates/feed",
        headers={"Authorization": f"Bearer {secret}", "X-Forwarded-For": ip},
    )
    return response.status_code, response.headers.get("Retry-After")


def test_guesses_from_one_network_are_refused_before_the_hash_in_every_worker(
    settings: Settings, session_factory: sessionmaker[Session], credential: str
) -> None:
    guess = "labelco.wrong-guess"
    worker_a, worker_b = _client(settings), _client(settings)
    for i in range(limits.PER_NETWORK.failures):
        worker = worker_a if i % 2 else worker_b
        assert _feed(worker, "198.51.100.7", guess)[0] == 401
    status, retry = _feed(worker_a, "198.51.100.7", guess)
    assert status == 429 and retry is not None and 0 < int(retry) <= 600
    # Even the right credential waits: the network is over its budget.
    assert _feed(_client(settings), "198.51.100.7", credential)[0] == 429
    # Another network is not affected, and signs in.
    assert _feed(worker_b, "203.0.113.5", credential)[0] == 200
    with session_scope(session_factory) as session:
        outcomes = session.scalars(
            select(Event.outcome).where(Event.kind == "affiliate_feed").order_by(Event.id)
        ).all()
        limited = session.scalar(
            select(func.sum(WebHitTally.count)).where(WebHitTally.outcome == "rate_limited")
        )
    assert outcomes.count("bad_credential") == limits.PER_NETWORK.failures
    # Both refusals counted; an audit event for the first of each minute only.
    assert limited == 2 and 1 <= outcomes.count("rate_limited") <= 2


@pytest.mark.parametrize(
    ("budget", "ip_of", "next_ip"),
    [
        # One affiliate guessed at from many networks: the per-affiliate budget holds.
        (limits.PER_AFFILIATE, "192.0.2.{}".format, "192.0.2.250"),
        # An IPv6 host cannot take a fresh budget per address: its /64 is one network.
        (limits.PER_NETWORK, lambda i: f"2001:db8:1:2::{i + 1:x}", "2001:db8:1:2:ffff::9"),
    ],
    ids=["per-affiliate", "ipv6-per-64"],
)
def test_spreading_guesses_over_addresses_does_not_escape_the_limit(
    settings: Settings, credential: str, budget: limits.Budget, ip_of, next_ip: str
) -> None:
    client = _client(settings)
    for i in range(budget.failures):
        assert _feed(client, ip_of(i), "labelco.wrong")[0] == 401
    status, retry = _feed(client, next_ip, "labelco.wrong")
    assert status == 429 and retry is not None


def test_a_busy_credential_check_answers_503_and_the_unsubscribe_page_does_not_wait(
    settings: Settings, credential: str
) -> None:
    client = _client(settings)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with limits.one_check_at_a_time():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        original = limits.CHECK_WAIT_SECONDS
        limits.CHECK_WAIT_SECONDS = 0.05
        try:
            status, retry = _feed(client, "198.51.100.9", credential)
        finally:
            limits.CHECK_WAIT_SECONDS = original
        assert status == 503 and retry is not None
        # Recipient pages never take a credential-check slot.
        assert client.get("/u/not-a-token").status_code == 400
    finally:
        release.set()
        holder.join(30)


def test_garbage_affiliate_links_and_missing_credentials_are_tallied_too(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    client = _client(settings)
    for i in range(25):
        headers = {"X-Forwarded-For": "198.51.100.8"}
        assert client.get(f"/affiliates/download/junk{i}", headers=headers).status_code == 403
        assert client.get("/affiliates/feed", headers=headers).status_code == 401
    with session_scope(session_factory) as session:
        events = session.scalar(select(func.count()).select_from(Event))
        counted = session.scalar(select(func.sum(WebHitTally.count)))
    assert events is not None and events <= 4  # two keys, and a minute may turn
    assert counted == 50


def test_repeated_bad_links_add_one_audit_event_per_network_and_minute(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    client = _client(settings)
    for i in range(40):
        assert (
            client.get(f"/u/garbage-{i}", headers={"X-Forwarded-For": "198.51.100.7"}).status_code
            == 400
        )
        assert (
            client.post(f"/u/garbage-{i}", headers={"X-Forwarded-For": "198.51.100.7"}).status_code
            == 400
        )
    with session_scope(session_factory) as session:
        events = session.scalar(select(func.count()).select_from(Event))
        counted = session.scalar(select(func.sum(WebHitTally.count)))
    # One event per (network, route, outcome, minute); a minute boundary may add one more.
    assert events is not None and events <= 2
    assert counted == 80
