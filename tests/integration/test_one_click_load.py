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

# VALID contacts get a good token (and REPEATS of them a second POST); the UNTOUCHED ones are
# only ever the target of FORGED posts (half signed with a foreign key, half tampered).
VALID, UNTOUCHED, REPEATS, FORGED, CLIENTS = 1000, 100, 600, 400, 16


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
    populate(settings, VALID + UNTOUCHED)
    sessions = sessions_for(settings)
    with session_scope(sessions) as session:
        ids = sorted(session.scalars(select(Address.id)).all())
    rnd = random.Random(8058)
    rnd.shuffle(ids)
    valid_ids, untouched = ids[:VALID], ids[VALID:]
    signer = TokenSigner(settings.secret_keys)
    forger = TokenSigner(["not-our-key-0123456789abcdef"])
    valid = [signer.sign_link(LinkPurpose.UNSUBSCRIBE, i, 1) for i in valid_ids]
    forged = [
        forger.sign_link(LinkPurpose.UNSUBSCRIBE, rnd.choice(untouched), 1)
        for _ in range(FORGED // 2)
    ]
    for _ in range(FORGED - len(forged)):
        good = signer.sign_link(LinkPurpose.UNSUBSCRIBE, rnd.choice(untouched), 1)
        forged.append(good[:-6] + ("abcdef" if not good.endswith("abcdef") else "fedcba"))
    tokens = valid + rnd.sample(valid, REPEATS) + forged
    rnd.shuffle(tokens)

    with serve(settings) as base, ThreadPoolExecutor(CLIENTS) as pool:
        started = time.monotonic()
        codes = list(pool.map(lambda t: post(f"{base}/u/{t}"), tokens))
        elapsed = time.monotonic() - started

    by_code = Counter(codes)
    assert by_code == {200: VALID + REPEATS, 400: FORGED}, by_code
    with session_scope(sessions) as session:
        suppressed = session.execute(
            select(Suppression.address_id, func.count())
            .where(Suppression.reason == "unsubscribe")
            .group_by(Suppression.address_id)
        ).all()
    assert {a for a, _ in suppressed} == set(valid_ids), "forged posts suppressed someone"
    assert {n for _, n in suppressed} == {1}
    print(
        f"\n{database.name}: {len(tokens)} one-click POSTs from {CLIENTS} clients in "
        f"{elapsed:.1f}s ({len(tokens) / elapsed:.0f}/s), codes {dict(by_code)}"
    )
