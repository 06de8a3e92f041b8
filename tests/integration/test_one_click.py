"""A mail provider's one-click unsubscribe, end to end over real HTTP (RFC 8058)."""

from __future__ import annotations

import re
import urllib.request
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from dispatcher.db import session_scope
from dispatcher.models import Delivery
from dispatcher.settings import Settings
from suppression.models import Address
from tests.integration.faults import (
    delivery_statuses,
    populate,
    sessions_for,
    start_campaign,
    wait_done,
)
from tests.support.backends import Backend
from tests.support.smtp_sink import SmtpSink
from tests.support.web_server import free_port, serve
from workers.process import WorkerProcess


def one_click(url: str) -> int:
    """POST exactly as a mail provider does: form-encoded body, no cookie, no redirect."""
    request = urllib.request.Request(
        url,
        data=b"List-Unsubscribe=One-Click",
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "MailProvider-OneClick/1.0",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return int(response.status)


def row_of(settings: Settings, campaign_id: int, address: str) -> tuple[str, str | None]:
    """(status, skip reason) of ``address``'s delivery in the campaign."""
    with session_scope(sessions_for(settings)) as session:
        row = session.execute(
            select(Delivery.status, Delivery.skip_reason)
            .join(Address, Address.id == Delivery.address_id)
            .where(Delivery.campaign_id == campaign_id, Address.address == address)
        ).one()
    return row[0], row[1]


def https_link(header: str) -> str:
    return next(u for u in re.findall(r"<([^>]+)>", header) if u.startswith("http"))


def per_campaign(sink: SmtpSink) -> dict[str, Counter[str]]:
    found: dict[str, Counter[str]] = {}
    for message in sink.received():
        campaign = message.message["Message-ID"].split(".")[0].lstrip("<")
        found.setdefault(campaign, Counter()).update(message.recipients)
    return found


def test_one_click_from_a_received_message_stops_running_and_next_campaigns(
    backend: Backend, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    eligible = populate(backend.settings, 200)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = backend.settings.replace(base_url=base_url)
    env = backend.env(
        mail_url=smtp_sink.url, base_url=base_url, batch_size="10", rate_per_second="60"
    )
    with serve(settings, port), WorkerProcess(env, tmp_path / "w.log", concurrency=1):
        first = start_campaign(settings, "first")
        wait_done(settings, first, 120)
        # The address the running campaign will reach last.
        target = max(eligible)
        message = next(m.message for m in smtp_sink.received() if target in m.recipients)
        url = https_link(message["List-Unsubscribe"])
        assert url.startswith(base_url + "/u/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        running = start_campaign(settings, "running")
        smtp_sink.wait_until(
            lambda got: sum(f"<c{running}." in r.message["Message-ID"] for r in got) >= 20,
            timeout=120,
        )
        # The target's batch is the campaign's last: its row is still queued, so the click
        # itself must stop it ("cancelled"); a row left for the claim's gate would end
        # "suppressed" instead, and the two must not be confused.
        assert delivery_statuses(settings, running)[target] == "queued", (
            "the target's batch was claimed before the click: the test cannot tell a stopped "
            "row from one the gate refused"
        )
        assert one_click(url) == 200
        assert row_of(settings, running, target) == ("cancelled", "unsubscribe")
        wait_done(settings, running, 120)
        after = start_campaign(settings, "after")
        wait_done(settings, after, 120)

    got = per_campaign(smtp_sink)
    assert got[f"c{first}"][target] == 1
    assert got[f"c{running}"][target] == 0, "the campaign in flight still mailed the address"
    assert got[f"c{after}"][target] == 0, "the next campaign mailed the address"
    assert row_of(settings, running, target) == ("cancelled", "unsubscribe")
    assert row_of(settings, after, target) == ("suppressed", "unsubscribe")
    for campaign in (f"c{running}", f"c{after}"):
        assert set(got[campaign]) == eligible - {target}
        assert max(got[campaign].values()) == 1
