"""A bounded load of one-click POSTs against the running server on 127.0.0.1."""

from __future__ import annotations

import random
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dispatcher.db import session_scope
from suppression.models import Address, Suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.integration.faults import populate, sessions_for
from tests.support.backends import Backend, make_backend
from tests.support.web_server import serve

# Bounded: 2,000 requests, and the whole run (both servers, all clients) within 4 minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CONTACTS, REPEATS, FORGED, CLIENTS = 1000, 600, 400, 16


@pytest.fixture(params=["sqlite", "postgres-rabbitmq"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with make_backend(request.param, tmp_path / "var") as backend:
        yield backend


def post(url: str) -> int:
    request = urllib.request.Request(
        url,
        data=b"List-Unsubscribe=One-Click",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_two_thousand_one_click_posts(database: Backend) -> None:
    settings = database.settings
    populate(settings, CONTACTS)
    sessions = sessions_for(settings)
    with session_scope(sessions) as session:
        ids = dict(session.execute(select(Address.address, Address.id)).all())
    signer = TokenSigner(settings.secret_keys)
    forger = TokenSigner(["not-our-key-0123456789abcdef"])
    rnd = random.Random(8058)
    valid = [signer.sign_link(LinkPurpose.UNSUBSCRIBE, i, 1) for i in ids.values()]
    forged = [
        forger.sign_link(LinkPurpose.UNSUBSCRIBE, rnd.choice(list(ids.values())), 1)
        for _ in range(FORGED // 2)
    ]
    forged += [t[:-6] + "abcdef" for t in rnd.sample(valid, FORGED - len(forged))]
    tokens = valid + rnd.sample(valid, REPEATS) + forged
    rnd.shuffle(tokens)

    with serve(settings) as base, ThreadPoolExecutor(CLIENTS) as pool:
        started = time.monotonic()
        codes = list(pool.map(lambda t: post(f"{base}/u/{t}"), tokens))
        elapsed = time.monotonic() - started

    by_code = Counter(codes)
    assert by_code == {200: CONTACTS + REPEATS, 400: FORGED}, by_code
    with session_scope(sessions) as session:
        suppressed = session.execute(
            select(Suppression.address_id, func.count())
            .where(Suppression.reason == "unsubscribe")
            .group_by(Suppression.address_id)
        ).all()
    assert len(suppressed) == CONTACTS and {n for _, n in suppressed} == {1}
    print(
        f"\n{database.name}: {len(tokens)} one-click POSTs from {CLIENTS} clients in "
        f"{elapsed:.1f}s ({len(tokens) / elapsed:.0f}/s), codes {dict(by_code)}"
    )
