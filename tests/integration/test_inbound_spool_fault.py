"""An accepted unsubscribe is never lost: the database is cut during a burst of one-click
POSTs and mailto unsubscribes; every request answered 200/202 (web) or 250 (receiver) is
applied once it is back, by the spool drainers of the hosts that accepted them."""

from __future__ import annotations

import smtplib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dispatcher.db import session_scope
from dispatcher.inbound import spool
from dispatcher.inbound.receiver import start_receiver
from dispatcher.models import InboundMessage
from suppression.models import Address, Suppression
from suppression.tokens import LinkPurpose, TokenSigner
from tests.factories import bulk_contacts
from tests.integration.faults import sessions_for
from tests.integration.test_one_click_load import post as one_click_post
from tests.support.backends import make_backend, require
from tests.support.tcp_proxy import TcpProxy
from tests.support.web_server import free_port, serve
from workers.process import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CLICKS, MAILS = 120, 60


def post(url: str) -> int:
    try:
        return one_click_post(url)
    except OSError:  # the server itself is up throughout; count a dropped request as refused
        return 0


def mail(port: int, sender: str, token: str) -> int:
    raw = (
        f"From: {sender}\r\nTo: unsubscribe@killertracks.com\r\n"
        f"Subject: unsubscribe {token}\r\nMessage-ID: <u.{token[:24]}@example.com>\r\n\r\n"
    )
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.sendmail("", ["unsubscribe@killertracks.com"], raw.encode())
        return 250
    except smtplib.SMTPResponseException as exc:
        return int(exc.smtp_code)
    except (OSError, smtplib.SMTPException):
        return 0


def test_every_accepted_unsubscribe_is_applied_after_a_database_cut(tmp_path: Path) -> None:
    require("postgresql")
    proxy = TcpProxy("127.0.0.1", 5432)
    try:
        with make_backend("postgres-rabbitmq", tmp_path / "var") as backend:
            with session_scope(sessions_for(backend.settings)) as session:
                addresses = sorted(bulk_contacts(session, CLICKS + MAILS))
                ids = dict(
                    session.execute(
                        select(Address.address, Address.id).where(Address.address.in_(addresses))
                    ).all()
                )
            via_proxy = backend.settings.database_url.replace(":5432/", f":{proxy.port}/")
            settings = backend.settings.replace(
                database_url=via_proxy, spool_dir=str(tmp_path / "spool")
            )
            signer = TokenSigner(settings.secret_keys)
            tokens = {a: signer.sign_link(LinkPurpose.UNSUBSCRIBE, ids[a], None) for a in addresses}
            port = free_port()
            controller, drainer = start_receiver(
                settings, sessions_for(settings), host="127.0.0.1", port=port, lmtp=False
            )
            accepted: dict[str, int] = {}
            lock = threading.Lock()
            try:
                with serve(settings) as base:

                    def one(index: int) -> None:
                        address = addresses[index]
                        if index < CLICKS:
                            code = post(f"{base}/u/{tokens[address]}")
                        else:
                            code = mail(port, address, tokens[address])
                        with lock:
                            accepted[address] = code

                    def cut_and_restore() -> None:
                        wait_until(lambda: len(accepted) >= 30, 120, what="first requests")
                        proxy.cut()
                        wait_until(lambda: len(accepted) >= 120, 120, what="requests in outage")
                        proxy.restore()

                    # Clicks and mails interleaved, the rest of the clicks after.
                    order = [
                        i
                        for pair in zip(range(MAILS), range(CLICKS, CLICKS + MAILS), strict=True)
                        for i in pair
                    ] + list(range(MAILS, CLICKS))
                    fault = threading.Thread(target=cut_and_restore)
                    fault.start()
                    with ThreadPoolExecutor(8) as pool:
                        list(pool.map(one, order))
                    fault.join(120)
                    ok = {a for a, code in accepted.items() if code in (200, 202, 250)}
                    spooled = sum(1 for code in accepted.values() if code == 202)
                    print(f"\naccepted {len(ok)} of {len(accepted)}; 202 (spooled) {spooled}")
                    assert spooled > 0, "the cut never reached the one-click path"
                    assert len(ok) >= len(addresses) // 2

                    def applied() -> set[str]:
                        with session_scope(sessions_for(backend.settings)) as session:
                            return set(
                                session.scalars(
                                    select(Address.address)
                                    .join(Suppression, Suppression.address_id == Address.id)
                                    .where(
                                        Suppression.reason == "unsubscribe",
                                        Suppression.lifted_at.is_(None),
                                    )
                                )
                            )

                    wait_until(lambda: ok <= applied(), 120, 0.5, what="spool applied")
                    wait_until(
                        lambda: spool.pending(settings.spool) == 0, 60, 0.5, what="spool empty"
                    )
                    with session_scope(sessions_for(backend.settings)) as session:
                        mails_spooled = session.scalar(
                            select(func.count())
                            .select_from(InboundMessage)
                            .where(InboundMessage.source == "spool")
                        )
                    print(f"mailto unsubscribes applied from the spool: {mails_spooled}")
                    assert mails_spooled, "the cut never reached the receiver's spool"
            finally:
                drainer.stop()
                controller.stop()
    finally:
        proxy.close()
