"""Bounces and complaints in the console: the campaign page and the list show what the
delivery rows hold, the pause thresholds, and why a campaign paused itself."""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.console import create_console_app
from dispatcher.db import session_scope
from dispatcher.inbound import returnpath
from dispatcher.inbound.sources import apply_raw
from dispatcher.models import Campaign, Delivery, DeliveryStatus
from dispatcher.settings import Settings
from suppression.tokens import TokenSigner
from tests.unit.dispatcher.console.conftest import PASSWORD, csrf, make_staff
from tests.unit.dispatcher.inbound.test_apply import CORPUS, delivery_of, dsn, sent_campaign


def feedback_campaigns(settings: Settings, sessions: sessionmaker[Session]) -> tuple[int, int]:
    """Two campaigns of 40 sent messages: one that got 3 hard bounces, 2 soft bounces and a
    complaint back (through the inbound pipeline, which paused it), and one that got none."""
    signer = TokenSigner(settings.secret_keys)
    with session_scope(sessions) as session:
        hit = sent_campaign(session, *[f"r{i:02d}@example.org" for i in range(40)])
        quiet = sent_campaign(session, status="done")

        def verp(n: int) -> str:
            delivery = delivery_of(session, hit, f"r{n:02d}@example.org")
            return returnpath.verp_address(signer, settings.return_path, delivery.id)

        reports = [
            dsn(
                verp(i),
                f"r{i:02d}@example.org",
                mid=f"<h{i}@mx>",
            )
            for i in range(3)
        ]
        reports += [
            dsn(
                verp(i),
                f"r{i:02d}@example.org",
                "4.2.2",
                f"<s{i}@mx>",
                "delayed",
            )
            for i in (10, 11)
        ]
        complainer = delivery_of(session, hit, "r20@example.org")
        mid = returnpath.message_id(
            signer, hit.id, complainer.contact_id, "killertracks.com", hit.message_nonce
        )
        arf = (CORPUS / "local" / "arf_yahoo.eml").read_bytes()
        reports.append(arf.replace(b"<c1.r1@killertracks.com>", mid.encode()))
        ids = hit.id, quiet.id
    for raw in reports:
        apply_raw(sessions, settings, signer, raw, source="test")
    return ids


class Cells(HTMLParser):
    """Text of each element carrying ``data-kind`` (its cells by ``data-count``, ``data-rate``
    and ``data-limit``), ``data-feedback`` or ``data-over``, nested elements' text included."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self._open: list[tuple[str, str]] = []  # (tag, key) of the elements being read
        self._row = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr":
            self._row = str(found.get("data-kind") or "")
        keys = [f"{self._row}/{a}" for a in ("data-count", "data-rate", "data-limit") if a in found]
        keys += [f"{a}={found[a]}" for a in ("data-feedback", "data-over") if a in found]
        for key in keys:
            self.text[key] = ""
            self._open.append((tag, key))

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open[-1][0] == tag:
            self._open.pop()
            break

    def handle_data(self, data: str) -> None:
        for _, key in self._open:
            self.text[key] += data


def cells(html: str) -> dict[str, str]:
    parser = Cells()
    parser.feed(html)
    return {key: plain(value) for key, value in parser.text.items()}


def plain(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.fixture
def app(settings: Settings) -> Flask:
    app = create_console_app(settings.replace(pause_min_sent=20))
    app.config["TESTING"] = True
    return app


@pytest.fixture
def viewer(app: Flask, settings: Settings, session_factory: sessionmaker[Session]) -> FlaskClient:
    make_staff(settings, session_factory, "v@staff.example", "viewer")
    client = app.test_client()
    response = client.post(
        "/sign-in",
        data={"email": "v@staff.example", "password": PASSWORD, "csrf_token": csrf(client)},
    )
    assert response.status_code == 302
    return client


def from_rows(sessions: sessionmaker[Session], campaign_id: int) -> Counter[str | None]:
    """What came back about each sent message, straight from the delivery rows."""
    with session_scope(sessions) as session:
        return Counter(
            session.scalars(
                select(Delivery.feedback).where(
                    Delivery.campaign_id == campaign_id,
                    Delivery.status == DeliveryStatus.SENT.value,
                )
            )
        )


def test_the_campaign_page_shows_the_rows_counts_rates_and_thresholds_and_why_it_paused(
    viewer: FlaskClient, app: Flask, session_factory: sessionmaker[Session]
) -> None:
    settings: Settings = app.config["DISPATCHER_SETTINGS"]
    hit, _ = feedback_campaigns(settings, session_factory)
    rows = from_rows(session_factory, hit)
    sent = sum(rows.values())
    assert (sent, rows["hard_bounce"], rows["soft_bounce"], rows["complaint"]) == (40, 3, 2, 1)

    html = viewer.get(f"/campaigns/{hit}").get_data(as_text=True)

    assert cells(html) == {
        "hard_bounce/data-count": str(rows["hard_bounce"]),
        "hard_bounce/data-rate": f"{100 * rows['hard_bounce'] / sent:.2f} % over",
        "hard_bounce/data-limit": "5.00 %",
        "soft_bounce/data-count": str(rows["soft_bounce"]),
        "soft_bounce/data-rate": f"{100 * rows['soft_bounce'] / sent:.2f} %",
        "soft_bounce/data-limit": "none",
        "complaint/data-count": str(rows["complaint"]),
        "complaint/data-rate": f"{100 * rows['complaint'] / sent:.2f} % over",
        "complaint/data-limit": "0.30 %",
    }
    with session_scope(session_factory) as session:
        campaign = session.get(Campaign, hit)
        assert campaign is not None
        status, reason = campaign.status, campaign.status_reason
    # The third hard bounce (7.50 % > 5 %) paused it; the page says so, in the reason's words.
    assert status == "paused" and reason == "hard-bounce rate 7.50% is over 5.00% (3 of 40)"
    assert 'id="paused-for-rates"' in html and f"This campaign paused itself: {reason}." in html
    assert "Soft bounces do not pause it: 3 within 7 days suppress the address." in html


def test_the_list_marks_the_campaign_over_a_threshold_and_not_the_quiet_one(
    viewer: FlaskClient, app: Flask, session_factory: sessionmaker[Session]
) -> None:
    settings: Settings = app.config["DISPATCHER_SETTINGS"]
    hit, quiet = feedback_campaigns(settings, session_factory)

    found = cells(viewer.get("/campaigns").get_data(as_text=True))

    marker = "! paused for its rates; complaint rate over 0.30%; hard-bounce rate over 5.00%"
    assert found[f"data-feedback={hit}"] == f"7.50 % / 2.50 % {marker}"
    assert found[f"data-over={hit}"] == marker
    assert found[f"data-feedback={quiet}"] == "0.00 % / 0.00 %"
    assert f"data-over={quiet}" not in found
    quiet_page = viewer.get(f"/campaigns/{quiet}").get_data(as_text=True)
    assert "paused-for-rates" not in quiet_page and "over-threshold" not in quiet_page


def test_a_finished_campaign_over_a_threshold_is_flagged_though_not_paused(
    viewer: FlaskClient, app: Flask, session_factory: sessionmaker[Session]
) -> None:
    settings: Settings = app.config["DISPATCHER_SETTINGS"]
    with session_scope(session_factory) as session:
        done = sent_campaign(session, *[f"d{i:02d}@example.org" for i in range(20)], status="done")
        for delivery in session.scalars(
            select(Delivery).where(Delivery.campaign_id == done.id).limit(5)
        ):
            delivery.feedback = "hard_bounce"
        done_id = done.id
    assert settings.pause_min_sent == 20

    html = viewer.get(f"/campaigns/{done_id}").get_data(as_text=True)

    assert 'id="over-threshold"' in html and "paused-for-rates" not in html
    assert "The hard-bounce rate 25.00% is over 5.00% (5 of 20)." in html
