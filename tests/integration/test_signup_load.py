"""A bounded load of signup POSTs against a real server on 127.0.0.1, mail to a real SMTP sink.

2,000 POSTs from 16 client threads, speaking for 40 client IPs (through one trusted proxy
hop), for 320 addresses: new ones, opted-in contacts, contacts who unsubscribed and contacts
whose mailbox bounced. The first 160 are a burst of 16 posts each for 10 addresses, so the
same address is asked for at the same moment. It checks: no 5xx; per IP exactly the
configured number of requests answered, the rest 429; one confirmation mail per address at
most, and exactly to the addresses whose accepted request may be mailed; nothing consented,
unsubscribed or lifted until a link is confirmed, and then only for the confirmed.
"""

from __future__ import annotations

import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dispatcher.db import session_scope
from dispatcher.models import SignupRequest
from suppression.models import Consent, ConsentState, Reason, Suppression
from tests.factories import make_contact
from tests.integration.faults import sessions_for
from tests.support.backends import Backend, make_backend
from tests.support.smtp_sink import SmtpSink
from tests.support.web_server import serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

POSTS, CLIENTS, IPS, IP_LIMIT = 2000, 16, 40, 45
NEW, OPTED_IN, UNSUBSCRIBED, BOUNCED, HOT, HOT_POSTS = 200, 40, 40, 40, 10, 16
HONEYPOT_EVERY = 20
CONFIRM = 20


@pytest.fixture(params=["sqlite", "postgres-rabbitmq"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with make_backend(request.param, tmp_path / "var") as backend:
        yield backend


def call(url: str, data: dict[str, str] | None = None, ip: str = "127.0.0.1") -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"X-Forwarded-For": ip})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    return found.group(1)


def snapshot(backend: Backend) -> tuple[list[tuple], list[tuple], int]:
    with session_scope(sessions_for(backend.settings)) as session:
        states = session.execute(
            select(ConsentState.address_id, ConsentState.scope, ConsentState.status).order_by(
                ConsentState.address_id, ConsentState.scope
            )
        ).all()
        active = session.execute(
            select(Suppression.address_id, Suppression.reason)
            .where(Suppression.lifted_at.is_(None))
            .order_by(Suppression.address_id, Suppression.reason)
        ).all()
        ledger = session.scalar(select(func.count()).select_from(Consent)) or 0
    return [tuple(r) for r in states], [tuple(r) for r in active], int(ledger)


def test_two_thousand_signup_posts(database: Backend, smtp_sink: SmtpSink) -> None:
    settings = database.settings.replace(
        mail_url=smtp_sink.url, signup_ip_limit=IP_LIMIT, signup_ip_window_seconds=3600
    )
    rnd = random.Random(11)
    groups = {
        "new": [f"new{i}@example.org" for i in range(NEW)],
        "opted_in": [f"in{i}@example.org" for i in range(OPTED_IN)],
        "unsubscribed": [f"unsub{i}@example.org" for i in range(UNSUBSCRIBED)],
        "bounced": [f"bounced{i}@example.org" for i in range(BOUNCED)],
    }
    with session_scope(sessions_for(settings)) as session:
        for address in groups["opted_in"]:
            make_contact(session, address)
        for address in groups["unsubscribed"]:
            make_contact(session, address, suppressed=Reason.UNSUBSCRIBE)
        for address in groups["bounced"]:
            make_contact(
                session, address, suppressed=Reason.HARD_BOUNCE, suppression_scope="global"
            )
    before = snapshot(database)
    everyone = [a for members in groups.values() for a in members]
    hot = rnd.sample(everyone, HOT)
    targets = [a for a in hot for _ in range(HOT_POSTS)]
    rest = [rnd.choice(everyone) for _ in range(POSTS - len(targets))]
    rnd.shuffle(rest)
    targets += rest
    ips = [f"198.51.100.{rnd.randrange(IPS)}" for _ in targets]
    honeypot = [i % HONEYPOT_EVERY == 7 for i in range(POSTS)]

    with serve(settings, trusted_proxies=1) as base, ThreadPoolExecutor(CLIENTS) as pool:
        token = csrf(call(f"{base}/subscribe")[1])

        def signup(i: int) -> int:
            data = {"csrf": token, "email": targets[i], "first_name": "Load", "marketing": "yes"}
            if i % 3 == 0:
                data["affiliates"] = "yes"
            if honeypot[i]:
                data["comment"] = "http://spam.example"
            return call(f"{base}/subscribe", data, ips[i])[0]

        started = time.monotonic()
        codes = list(pool.map(signup, range(POSTS)))
        elapsed = time.monotonic() - started

        by_code = Counter(codes)
        assert set(by_code) <= {200, 429}, by_code
        sent_per_ip = Counter(ips)
        answered_per_ip = Counter(ip for ip, code in zip(ips, codes, strict=True) if code == 200)
        assert answered_per_ip == {ip: min(n, IP_LIMIT) for ip, n in sent_per_ip.items()}

        blocked = set(groups["bounced"])
        expected = {
            targets[i]
            for i in range(POSTS)
            if codes[i] == 200 and not honeypot[i] and targets[i] not in blocked
        }
        sessions = sessions_for(settings)

        def settled() -> bool:
            with session_scope(sessions) as session:
                return not session.scalar(
                    select(func.count())
                    .select_from(SignupRequest)
                    .where(SignupRequest.mail_status == "queued")
                )

        deadline = time.monotonic() + 180
        while not (len(smtp_sink.received()) >= len(expected) and settled()):
            assert time.monotonic() < deadline, "confirmation mails did not all leave"
            time.sleep(0.2)
        mailed = Counter(r for m in smtp_sink.received() for r in m.recipients)
        assert set(mailed) == expected
        assert set(mailed.values()) == {1}, "an address got two confirmation mails in a day"
        with session_scope(sessions) as session:
            statuses = Counter(session.scalars(select(SignupRequest.mail_status)))
        assert statuses == {"sent": len(expected)}
        # Nothing consented, suppressed or lifted by asking alone.
        assert snapshot(database) == before

        # Confirm some: consent for exactly those, unsubscribed ones re-subscribed.
        chosen = rnd.sample(sorted(expected), CONFIRM)
        for address in chosen:
            message = next(m.message for m in smtp_sink.received() if address in m.recipients)
            assert message["List-Unsubscribe"] is None
            text = message.get_body(("plain",)).get_content()
            link = re.search(r"(http://\S+/subscribe/confirm/\S+)", text).group(1)
            link = base + link[link.index("/subscribe/") :]
            page = call(link)[1]
            code, body = call(link, {"csrf": csrf(page)})
            assert code == 200 and "your subscription is confirmed" in body
    states, active, ledger = snapshot(database)
    with session_scope(sessions) as session:
        signup_sources = session.scalar(
            select(func.count()).select_from(Consent).where(Consent.source.like("signup:%"))
        )
        confirmed = session.scalar(
            select(func.count())
            .select_from(SignupRequest)
            .where(SignupRequest.confirmed_at.is_not(None))
        )
    assert confirmed == CONFIRM
    assert signup_sources == ledger - before[2]
    newly_opted_in = {a for a in chosen if a in groups["new"] or a in groups["unsubscribed"]}
    assert signup_sources >= len(newly_opted_in)
    lifted = {s for s in before[1] if s not in set(active)}
    assert all(reason == "unsubscribe" for _, reason in lifted)
    assert len(lifted) == len([a for a in chosen if a in groups["unsubscribed"]])
    print(
        f"\n{database.name}: {POSTS} signup POSTs from {CLIENTS} clients ({IPS} IPs) in "
        f"{elapsed:.1f}s ({POSTS / elapsed:.0f}/s), codes {dict(by_code)}, "
        f"{len(expected)} confirmation mails to {len(expected)} addresses"
    )
