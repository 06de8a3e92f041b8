"""A link-scanner storm against the production recipe (dispatcher web, PostgreSQL) on 127.0.0.1:
repeated GETs fold into one audit row, one-click POSTs are answered and applied during a
burst of GETs, and the database pool holds the load without opening new connections.

Bounded in requests and time; no timing is asserted (speed is bench/recipient_load.py's).
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dispatcher.db import session_scope
from dispatcher.models import Delivery
from dispatcher.web import POOL_SPARE
from suppression.consent import current_consent
from suppression.models import Address, Event, Scope, Suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.factories import make_sending_campaign
from tests.integration.faults import populate, sessions_for
from tests.support.backends import PG_ADMIN_URL, Backend, make_backend
from tests.support.production import Server, answers, production, sessions_opened
from tests.support.web_server import free_port
from workers.process import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CONTACTS = 300
ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with make_backend("postgres-rabbitmq", tmp_path_factory.mktemp("storm") / "var") as b:
        populate(b.settings, CONTACTS)
        with session_scope(sessions_for(b.settings)) as session:
            make_sending_campaign(session)
        yield b


@pytest.fixture(scope="module")
def ids(backend: Backend) -> list[int]:
    with session_scope(sessions_for(backend.settings)) as session:
        return sorted(session.scalars(select(Address.id)))


def links(backend: Backend, purpose: LinkPurpose, ids: list[int]) -> list[str]:
    signer = TokenSigner(backend.settings.secret_keys)
    prefix = "/u/" if purpose is LinkPurpose.UNSUBSCRIBE else "/preferences/"
    return [prefix + signer.sign_link(purpose, i, 1) for i in ids]


def fetch(server: Server, paths: list[str], *, method: str = "GET", agent: str = "t") -> Counter:
    """Each path in turn on one keep-alive connection; the status codes."""
    conn = http.client.HTTPConnection("127.0.0.1", int(server.base.rsplit(":", 1)[1]), timeout=30)
    codes: Counter[int] = Counter()
    headers = {"User-Agent": agent}
    body = None
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = ONE_CLICK
    try:
        for path in paths:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            codes[response.status] += 1
    finally:
        conn.close()
    return codes


def in_parallel(jobs: list) -> list[Counter]:
    results: list[Counter] = [Counter() for _ in jobs]

    def run(i: int) -> None:
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    return results


@pytest.fixture(scope="module")
def server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("web") / "web.log"
    with production(backend.env(), free_port(), workers=1, threads=8, log=log) as running:
        yield running


def test_fifty_gets_of_one_link_from_one_browser_are_one_audit_row_with_their_count(
    backend: Backend, server: Server, ids: list[int]
) -> None:
    address_id = ids[0]
    page = links(backend, LinkPurpose.UNSUBSCRIBE, [address_id])[0]
    assert fetch(server, [page] * 50, agent="SafeLinks/1.0") == {200: 50}
    assert fetch(server, [page], agent="Mozilla/5.0") == {200: 1}
    # The scanner: one row that says who, first and last seen, and how often; written by
    # the worker's page-view writer within a second or so.
    wanted = [("Mozilla/5.0", "127.0.0.1", 1, "shown"), ("SafeLinks/1.0", "127.0.0.1", 50, "shown")]
    wait_until(
        lambda: sorted(summary(e) for e in page_hits(backend, address_id)) == wanted,
        timeout=30,
        what="the page views written",
    )
    scanner = next(e for e in page_hits(backend, address_id) if e.count == 50)
    assert scanner.last_at is not None and scanner.last_at > scanner.occurred_at


def page_hits(backend: Backend, address_id: int) -> list[Event]:
    with session_scope(sessions_for(backend.settings)) as session:
        return list(
            session.scalars(
                select(Event).where(Event.kind == "web_hit", Event.address_id == address_id)
            )
        )


def summary(e: Event) -> tuple:
    return (e.user_agent, e.ip, e.count, e.detail["action"])


def test_a_clean_stop_of_the_server_writes_the_page_views_it_counted(
    backend: Backend, tmp_path: Path, ids: list[int]
) -> None:
    """The server's graceful stop (SIGTERM) writes what the workers counted and had not yet
    written (here: nothing is written before the stop, the writer waits an hour)."""
    address_id = ids[-1]
    page = links(backend, LinkPurpose.PREFERENCES, [address_id])[0]
    env = backend.env(web_hit_flush_seconds="3600")
    with production(env, free_port(), workers=1, threads=2, log=tmp_path / "g.log") as running:
        assert fetch(running, [page] * 7, agent="SafeLinks/2.0") == {200: 7}
        assert page_hits(backend, address_id) == []
    assert [summary(e) for e in page_hits(backend, address_id)] == [
        ("SafeLinks/2.0", "127.0.0.1", 7, "shown")
    ]


def test_one_click_posts_during_a_burst_of_gets_are_all_answered_and_applied(
    backend: Backend, server: Server, ids: list[int]
) -> None:
    scanned, unsubscribing = ids[1:151], ids[151:251]
    pages = links(backend, LinkPurpose.UNSUBSCRIBE, scanned) + links(
        backend, LinkPurpose.PREFERENCES, scanned
    )
    posts = links(backend, LinkPurpose.UNSUBSCRIBE, unsubscribing)
    storm = [lambda k=k: fetch(server, pages[k::12] * 5, agent=f"scanner-{k}") for k in range(12)]
    clicks = [lambda k=k: fetch(server, posts[k::4], method="POST") for k in range(4)]
    results = in_parallel(storm + clicks)

    assert sum(results[:12], Counter()) == {200: 5 * len(pages)}
    assert sum(results[12:], Counter()) == {200: len(posts)}
    with session_scope(sessions_for(backend.settings)) as session:
        suppressed = set(
            session.scalars(
                select(Suppression.address_id).where(
                    Suppression.address_id.in_(unsubscribing),
                    Suppression.reason == "unsubscribe",
                    Suppression.lifted_at.is_(None),
                )
            )
        )
        queued = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.address_id.in_(unsubscribing), Delivery.status == "queued")
        )
        opted_out = {
            i
            for i in unsubscribing
            if (c := current_consent(session, i, Scope.MARKETING)) is not None
            and c.status == "opted_out"
        }
        unsubscribed_events = session.scalar(
            select(func.count(func.distinct(Event.address_id))).where(
                Event.kind == "unsubscribed", Event.address_id.in_(unsubscribing)
            )
        )
    assert suppressed == set(unsubscribing)
    assert opted_out == set(unsubscribing)
    assert queued == 0
    assert unsubscribed_events == len(unsubscribing)


def test_the_pool_holds_a_load_with_no_new_database_connections(
    tmp_path: Path,
) -> None:
    """More concurrent clients than threads, on two processes: PostgreSQL opens no more
    sessions than the two pools hold (a pool smaller than the threads opens and closes one
    per request past it)."""
    workers, threads = 2, 4
    with make_backend("postgres-rabbitmq", tmp_path / "var") as backend:
        populate(backend.settings, 200)
        with session_scope(sessions_for(backend.settings)) as session:
            ids = sorted(session.scalars(select(Address.id)))
        pages = links(backend, LinkPurpose.UNSUBSCRIBE, ids) + links(
            backend, LinkPurpose.PREFERENCES, ids
        )
        posts = links(backend, LinkPurpose.UNSUBSCRIBE, ids[:120])
        database = backend.settings.database_url.rsplit("/", 1)[1]
        before = sessions_opened(PG_ADMIN_URL, database)
        with production(backend.env(), free_port(), workers=workers, threads=threads) as server:
            jobs = [lambda k=k: fetch(server, pages[k::12] * 3) for k in range(12)]
            jobs += [lambda k=k: fetch(server, posts[k::4], method="POST") for k in range(4)]
            results = in_parallel(jobs)
        # The server has stopped: every session it opened has ended and been counted.
        opened = sessions_opened(PG_ADMIN_URL, database) - before
    assert sum(results, Counter()) == {200: 3 * len(pages) + len(posts)}
    assert 0 < opened <= workers * (threads + POOL_SPARE), opened


def test_a_worker_that_dies_is_replaced_and_the_next_one_click_is_applied(
    backend: Backend, tmp_path: Path, ids: list[int]
) -> None:
    """A worker killed outright (the OOM killer, a segfault in a C library) is started again
    by the server; the unsubscribe that comes next is answered and applied."""
    address_id = ids[-2]
    post = links(backend, LinkPurpose.UNSUBSCRIBE, [address_id])
    with production(
        backend.env(), free_port(), workers=1, threads=2, log=tmp_path / "w.log"
    ) as running:
        (dead,) = running.worker_pids()
        os.kill(dead, signal.SIGKILL)
        wait_until(
            lambda: len(running.worker_pids()) == 1 and dead not in running.worker_pids(),
            timeout=60,
            interval=0.1,
            what="a new worker in place of the killed one",
        )
        wait_until(
            lambda: answers(running.base + "/healthz"),
            timeout=60,
            interval=0.1,
            what="the new worker answering",
        )
        assert fetch(running, post, method="POST") == {200: 1}
    with session_scope(sessions_for(backend.settings)) as session:
        reasons = session.scalars(
            select(Suppression.reason).where(Suppression.address_id == address_id)
        ).all()
    assert reasons == ["unsubscribe"]
