"""The console through Flask's test client: sign-in, refusals, content versions, the gate."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import fan_out
from dispatcher.console.campaigns import audience_counts
from dispatcher.db import session_scope
from dispatcher.models import Campaign, CampaignContent, Delivery, Staff
from dispatcher.sending.batch import send_batch
from dispatcher.settings import Settings
from suppression.models import ConsentStatus, Event, Reason
from suppression.tokens import TokenSigner
from tests.factories import make_contact
from tests.unit.dispatcher.console.conftest import PASSWORD, csrf, make_staff, post

BODY = "<h1>Hello {{ greeting_name }}</h1><p>New tracks, {{ first_name }}.</p>"


def new_campaign(client, **over):
    data = {
        "name": "December",
        "purpose": "marketing",
        "audience": "",
        "subject": "{{ greeting_name }}, new tracks",
        "preheader": "Fresh music",
        "body_format": "html",
        "body": BODY,
        "body_text": "",
        "layout": "_layout",
    }
    data.update(over)
    return post(client, "/campaigns/new", data, "/campaigns/new")


def count(sessions: sessionmaker[Session], model) -> int:
    with session_scope(sessions) as session:
        return int(session.scalar(select(func.count()).select_from(model)))


def events(sessions: sessionmaker[Session], kind: str) -> list[Event]:
    with session_scope(sessions) as session:
        rows = list(session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))
        session.expunge_all()
        return rows


def test_pages_need_sign_in(app) -> None:
    response = app.test_client().get("/campaigns")
    assert response.status_code == 302 and "/sign-in" in response.headers["Location"]


def test_cookie_flags_and_headers(signed_in, app, settings: Settings) -> None:
    client = app.test_client()
    client.get("/sign-in")
    make_staff(settings, app.extensions["dispatcher.sessions"], "c@staff.example", "viewer")
    response = client.post(
        "/sign-in",
        data={"email": "c@staff.example", "password": PASSWORD, "csrf_token": csrf(client)},
    )
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # the console URL is http here
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "http" not in csp


def test_secure_cookie_when_console_url_is_https(settings: Settings, session_factory) -> None:
    from dispatcher.console import create_console_app

    app = create_console_app(settings.replace(console_url="https://console.example"))
    client = app.test_client()
    https = "https://console.example"
    page = client.get("/sign-in", base_url=https).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    make_staff(settings, session_factory, "s@staff.example", "viewer")
    response = client.post(
        "/sign-in",
        data={"email": "s@staff.example", "password": PASSWORD, "csrf_token": token},
        base_url=https,
    )
    assert "Secure" in response.headers["Set-Cookie"]


def test_post_without_csrf_is_400_recorded_and_changes_nothing(signed_in, session_factory) -> None:
    client = signed_in("editor")
    before = count(session_factory, Campaign)
    response = client.post("/campaigns/new", data={"name": "x", "subject": "y", "body": "z"})
    assert response.status_code == 400
    assert count(session_factory, Campaign) == before
    refused = events(session_factory, "console_refused")
    assert refused[-1].outcome == "400" and refused[-1].actor == "editor@staff.example"


def test_viewer_scheduling_is_403_recorded_and_changes_nothing(signed_in, session_factory) -> None:
    editor = signed_in("editor")
    assert new_campaign(editor).status_code == 302
    viewer = signed_in("viewer")
    response = post(viewer, "/campaigns/1/schedule", {"when": "now"}, "/campaigns/1")
    assert response.status_code == 403
    with session_scope(session_factory) as session:
        assert session.get(Campaign, 1).status == "draft"
    refused = events(session_factory, "console_refused")
    assert refused[-1].outcome == "403" and refused[-1].actor == "viewer@staff.example"
    assert refused[-1].ip == "127.0.0.1"


def test_sixth_wrong_password_locks_the_account(app, settings, session_factory) -> None:
    make_staff(settings, session_factory, "l@staff.example", "editor")
    client = app.test_client()
    token = csrf(client)
    for attempt in range(1, 7):
        response = client.post(
            "/sign-in",
            data={"email": "l@staff.example", "password": "wrong password!", "csrf_token": token},
        )
        assert response.status_code == 401
        locked = "locked" in response.get_data(as_text=True)
        assert locked == (attempt == 6), attempt
    # Now even the right password is refused, and nothing signs in.
    response = client.post(
        "/sign-in", data={"email": "l@staff.example", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 401 and "locked" in response.get_data(as_text=True)
    assert client.get("/campaigns").status_code == 302
    outcomes = [e.outcome for e in events(session_factory, "staff_sign_in")]
    assert outcomes[-7:] == ["wrong_password"] * 5 + ["locked_now", "locked"]
    with session_scope(session_factory) as session:
        staff = session.scalar(select(Staff).where(Staff.email == "l@staff.example"))
        assert staff.locked_until is not None


def test_set_password_link_works_once(app, settings, session_factory) -> None:
    from dispatcher.console.staff import add_staff

    with session_scope(session_factory) as session:
        _, link = add_staff(session, settings, "new@staff.example", "viewer", actor="t")
    path = link.removeprefix(settings.console_url)
    client = app.test_client()
    assert client.get(path).status_code == 200
    data = {"password": PASSWORD, "confirm": PASSWORD, "csrf_token": csrf(client, path)}
    assert client.post(path, data=data).status_code == 302
    assert client.get(path).status_code == 400


def test_sandbox_escape_is_refused_and_saves_nothing(signed_in, session_factory) -> None:
    client = signed_in("editor")
    before = (count(session_factory, Campaign), count(session_factory, CampaignContent))
    for body in (
        "<p>{{ ''.__class__.__mro__[1].__subclasses__() }}</p>",
        "<p>{{ cycler.__init__.__globals__ }}</p>",
        "<p>{% for x in range(10**9) %}{% endfor %}</p>",
    ):
        response = new_campaign(client, body=body)
        assert response.status_code == 400, body
        text = response.get_data(as_text=True)
        assert "refused" in text or "undefined" in text or "range" in text, text
    assert (count(session_factory, Campaign), count(session_factory, CampaignContent)) == before


def test_the_console_refuses_a_body_that_hides_the_footer(signed_in, session_factory) -> None:
    """The red-team body (a raw-text element ending inside an attribute, then a hidden div
    around the layout's footer) as an editor types it: refused on save, nothing kept."""
    client = signed_in("editor")
    before = (count(session_factory, Campaign), count(session_factory, CampaignContent))
    body = (
        "<h1>New releases</h1><p>Fresh tracks this week.</p>"
        '<noembed><p title=\'</noembed><div style="display:none" x="\'></p></noembed>'
    )
    response = new_campaign(client, body=body)
    assert response.status_code == 400
    assert "a &lt;noembed&gt; element is not allowed in a body" in response.get_data(as_text=True)
    assert (count(session_factory, Campaign), count(session_factory, CampaignContent)) == before


def test_every_save_is_a_version_and_the_scheduled_one_is_frozen(
    signed_in, session_factory
) -> None:
    client = signed_in("editor")
    new_campaign(client)
    data = {
        "subject": "Second",
        "body": "<p>v2 {{ first_name }}</p>",
        "layout": "_layout",
        "body_format": "html",
        "preheader": "",
        "body_text": "",
    }
    assert post(client, "/campaigns/1/edit", data, "/campaigns/1/edit").status_code == 302
    assert post(client, "/campaigns/1/schedule", {"when": "now"}, "/campaigns/1").status_code == 302
    response = post(client, "/campaigns/1/edit", {**data, "subject": "Third"}, "/campaigns/1/edit")
    assert response.status_code in (400, 404, 302)
    with session_scope(session_factory) as session:
        campaign = session.get(Campaign, 1)
        assert campaign.status == "scheduled"
        assert campaign.content.version == 2 and campaign.content.subject == "Second"
        assert session.scalar(select(func.count()).select_from(CampaignContent)) == 2


def test_audience_counts_are_what_the_claim_does(
    signed_in, settings: Settings, session_factory
) -> None:
    with session_scope(session_factory) as session:
        make_contact(session, "in@example.com")
        make_contact(session, "in2@example.com")
        make_contact(session, "out@example.com", marketing=ConsentStatus.OPTED_OUT)
        make_contact(session, "never@example.com", marketing=None)
        make_contact(
            session,
            "bounced@example.com",
            suppressed=Reason.HARD_BOUNCE,
            suppression_scope="global",
        )
    with session_scope(session_factory) as session:
        counts = audience_counts(session, "marketing", None)
    assert (counts.matched, counts.eligible) == (5, 2)
    assert counts.skipped == {"hard_bounce": 1, "not_asked": 1, "opted_out": 1}

    client = signed_in("editor")
    new_campaign(client)
    page = client.get("/campaigns/1").get_data(as_text=True)
    assert 'id="gate-eligible">2<' in page
    post(client, "/campaigns/1/schedule", {"when": "now"}, "/campaigns/1")
    signer = TokenSigner(settings.secret_keys)
    for first, last in fan_out(session_factory, 1, 100):
        send_batch(settings, session_factory, signer, 1, first, last)
    with session_scope(session_factory) as session:
        sent = session.scalar(
            select(func.count()).where(Delivery.campaign_id == 1, Delivery.status == "sent")
        )
        reasons = dict(
            session.execute(
                select(Delivery.skip_reason, func.count())
                .where(Delivery.skip_reason.is_not(None))
                .group_by(Delivery.skip_reason)
            ).all()
        )
    assert sent == counts.eligible and reasons == counts.skipped


def test_message_sent_comes_from_the_frozen_version(
    signed_in, settings: Settings, session_factory
) -> None:
    with session_scope(session_factory) as session:
        make_contact(session, "ann@example.com", first_name="Ann")
    client = signed_in("editor")
    new_campaign(client, body="<p>Dear {{ first_name }}, v1 &amp; more</p>")
    post(client, "/campaigns/1/schedule", {"when": "now"}, "/campaigns/1")
    signer = TokenSigner(settings.secret_keys)
    for first, last in fan_out(session_factory, 1, 100):
        send_batch(settings, session_factory, signer, 1, first, last)
    import email
    import email.policy

    (path,) = list((settings.outbox / "new").iterdir())
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Ann, new tracks"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "Dear Ann, v1 &amp; more" in html and "Dear Ann, v1 & more" in text
    assert settings.postal_address in html and settings.postal_address in text
    assert "/u/" in text


def test_every_page_renders_for_an_admin(signed_in, session_factory) -> None:
    client = signed_in("admin")
    new_campaign(client)
    for path in (
        "/campaigns",
        "/campaigns/new",
        "/campaigns/1",
        "/campaigns/1/edit",
        "/campaigns/1/preview",
        "/campaigns/1/preview.html",
        "/campaigns/1/progress.json",
        "/audience.json?audience=tag:jazz",
        "/campaigns/1/pause",
        "/people",
        "/people?address=ann@example.com",
        "/suppressions",
        "/contacts/import",
        "/affiliates",
        "/stats",
        "/audit",
        "/staff",
    ):
        assert client.get(path).status_code == 200, path


def test_get_never_changes_state(signed_in, session_factory) -> None:
    client = signed_in("editor")
    new_campaign(client)
    post(client, "/campaigns/1/schedule", {"when": "now"}, "/campaigns/1")
    for action in ("pause", "cancel"):
        assert client.get(f"/campaigns/1/{action}").status_code == 200
    with session_scope(session_factory) as session:
        assert session.get(Campaign, 1).status == "scheduled"
