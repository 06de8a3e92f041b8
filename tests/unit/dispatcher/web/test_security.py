"""What every response carries and what is refused before a view runs; accessible pages."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from flask.testing import FlaskClient

from dispatcher.db import session_scope
from dispatcher.settings import Settings
from dispatcher.web import create_app
from suppression.models import Reason
from suppression.suppressions import add_suppression
from suppression.tokens import LinkPurpose
from tests.conftest import settings_for
from tests.unit.dispatcher.web.pages import csrf, events, link, state


def test_security_headers_and_no_third_party_resources(
    client: FlaskClient, settings: Settings, contact_id: int
) -> None:
    for response in (
        client.get(link(settings, LinkPurpose.PREFERENCES, contact_id)),
        client.post(
            link(settings, LinkPurpose.UNSUBSCRIBE, contact_id),
            data={"List-Unsubscribe": "One-Click"},
        ),
        client.get("/u/garbage"),
        client.get("/no-such-page"),
    ):
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert not re.search(rb'(src|href|action)="(https?:)?//', response.data)
        assert "Set-Cookie" not in response.headers
    assert client.get("/static/site.css").status_code == 200
    assert client.get("/favicon.ico").status_code == 204


def test_oversized_body_is_refused_and_recorded(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    before = state(session_factory, contact_id)
    response = client.post(
        link(settings, LinkPurpose.UNSUBSCRIBE, contact_id),
        data={"List-Unsubscribe": "One-Click", "pad": "x" * 100_000},
        headers={"User-Agent": "Flooder/1"},
    )
    assert response.status_code == 413
    assert state(session_factory, contact_id) == before
    hit = events(session_factory)[-1]
    assert (hit.outcome, hit.user_agent, hit.address_id) == ("not_checked", "Flooder/1", None)
    assert hit.detail == {"route": "unsubscribe", "action": "refused_413", "method": "POST"}


def test_a_method_the_route_does_not_take_is_refused_and_recorded(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    before = state(session_factory, contact_id)
    response = client.delete(link(settings, LinkPurpose.PREFERENCES, contact_id))
    assert response.status_code == 405
    assert state(session_factory, contact_id) == before
    assert events(session_factory)[-1].detail["action"] == "refused_405"


@pytest.mark.parametrize(("proxies", "recorded"), [(0, "127.0.0.1"), (1, "203.0.113.9")])
def test_the_recipients_ip_is_read_through_trusted_proxies_only(
    settings: Settings, session_factory, contact_id: int, proxies: int, recorded: str
) -> None:
    client = create_app(settings, trusted_proxies=proxies).test_client()
    client.get(
        link(settings, LinkPurpose.UNSUBSCRIBE, contact_id),
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert events(session_factory)[-1].ip == recorded


class _Page(HTMLParser):
    """What an accessibility check needs from a page."""

    def __init__(self) -> None:
        super().__init__()
        self.lang: str | None = None
        self.h1 = 0
        self.title = False
        self.inputs: list[str | None] = []
        self.labels: set[str] = set()
        self.buttons: list[str] = []
        self._in_button = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        self.h1 += tag == "h1"
        self.title |= tag == "title"
        if tag == "input" and a.get("type") != "hidden":
            self.inputs.append(a.get("id"))
        if tag == "label" and a.get("for"):
            self.labels.add(str(a["for"]))
        if tag == "button":
            self._in_button = True
            self.buttons.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._in_button = False

    def handle_data(self, data: str) -> None:
        if self._in_button:
            self.buttons[-1] += data.strip()


def test_every_page_is_plain_accessible_html(
    client: FlaskClient, settings: Settings, session_factory, contact_id: int
) -> None:
    unsubscribe = link(settings, LinkPurpose.UNSUBSCRIBE, contact_id)
    preferences = link(settings, LinkPurpose.PREFERENCES, contact_id)
    confirm = client.get(unsubscribe)
    pages = {
        "confirm": confirm,
        "unsubscribed": client.post(unsubscribe, data={"csrf": csrf(confirm.data)}),
        "preferences": client.get(preferences),
        "invalid": client.get("/u/not-a-token"),
        "stale form": client.post(unsubscribe, data={"csrf": "old"}),
        "not found": client.get("/nothing"),
    }
    with session_scope(session_factory) as session:
        add_suppression(session, contact_id, scope="global", reason=Reason.LEGAL, source="staff")
    pages["blocked"] = client.get(preferences)
    for name, response in pages.items():
        assert response.mimetype == "text/html", name
        page = _Page()
        page.feed(response.data.decode())
        assert page.lang == "en" and page.title and page.h1 == 1, name
        assert all(i and i in page.labels for i in page.inputs), f"{name}: input without label"
        assert all(page.buttons), f"{name}: button without text"
    assert b"legal" in pages["blocked"].data


@pytest.mark.parametrize(
    ("proxies", "recorded"),
    [("0", "127.0.0.1"), ("1", "203.0.113.9"), ("2", "198.51.100.1")],
)
def test_the_forwarded_for_depth_is_a_setting_and_counts_only_that_many_proxies(
    settings: Settings, session_factory, contact_id: int, proxies: str, recorded: str
) -> None:
    configured = settings_for(settings.home, trusted_proxies=proxies)
    client = create_app(configured).test_client()
    client.get(
        link(settings, LinkPurpose.UNSUBSCRIBE, contact_id),
        # A client-written entry first, then what each of our proxies appended.
        headers={"X-Forwarded-For": "10.9.9.9, 198.51.100.1, 203.0.113.9"},
    )
    assert events(session_factory)[-1].ip == recorded


def test_a_redirect_never_follows_the_host_header(client: FlaskClient) -> None:
    response = client.get("/static//site.css", headers={"Host": "evil.example"})
    assert response.status_code == 308
    assert response.headers["Location"] == "http://127.0.0.1:8025/static/site.css"
