"""The public forms through Flask's test client, mail read back from the maildir outbox.

The test client runs what a response does after it is answered (the mail) only when the
response is closed, as a server does after writing it: :func:`post` closes it.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from dispatcher.db import session_scope
from dispatcher.models import SignupRequest
from dispatcher.settings import Settings
from dispatcher.web import create_app
from suppression.consent import current_consent
from suppression.models import Consent, ConsentStatus, Reason, Scope
from suppression.registry import find_address
from suppression.tokens import LinkPurpose, TokenSigner
from tests.factories import make_contact
from tests.support.clock import signed_ago
from tests.unit.dispatcher.web.pages import csrf, events
from tests.unit.dispatcher.web.test_security import _Page

SAME_ANSWER = "If this address can receive e-mail from us, we have sent it a message"


def outbox(settings: Settings) -> list[EmailMessage]:
    assert settings.outbox is not None
    folder = Path(settings.outbox) / "new"
    if not folder.is_dir():
        return []
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(folder.iterdir())
    ]


def post(client: FlaskClient, path: str, data: dict[str, str], **kw: object) -> TestResponse:
    response = client.post(path, data=data, **kw)  # type: ignore[arg-type]
    response.close()
    return response


def form_data(client: FlaskClient, path: str = "/subscribe", **fields: str) -> dict[str, str]:
    return {"csrf": csrf(client.get(path).data), **fields}


def confirm_link(message: EmailMessage) -> str:
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return re.search(r"http://[^/]+(/subscribe/confirm/\S+)", text).group(1)  # type: ignore[union-attr]


def consents(session_factory) -> int:
    with session_scope(session_factory) as session:
        return int(session.scalar(select(func.count()).select_from(Consent)) or 0)


def test_form_asks_each_consent_separately_unticked_with_the_configured_wording(
    tmp_path: Path, settings: Settings
) -> None:
    custom = settings.replace(
        signup_fields=("first_name", "genre"),
        signup_marketing_text="Send me the Killer Tracks newsletter.",
    )
    page = create_app(custom).test_client().get("/subscribe")
    body = page.data.decode()
    assert page.status_code == 200
    boxes = re.findall(r'<input type="checkbox"[^>]*>', body)
    assert [re.search(r'name="(\w+)"', b).group(1) for b in boxes] == ["marketing", "affiliates"]  # type: ignore[union-attr]
    assert not any("checked" in b for b in boxes)
    assert "Send me the Killer Tracks newsletter." in body
    assert settings.signup_affiliates_text in body
    assert 'name="genre"' in body and 'name="first_name"' in body
    assert "<script" not in body
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_signup_mail_confirm_and_proof(
    client: FlaskClient, settings: Settings, session_factory
) -> None:
    response = post(
        client,
        "/subscribe",
        form_data(client, email="Nia@Example.com", first_name="Nia", marketing="yes"),
        headers={"User-Agent": "Firefox/128"},
    )
    assert response.status_code == 200 and SAME_ANSWER in response.data.decode()
    assert consents(session_factory) == 0
    [message] = outbox(settings)
    assert message["To"] == "Nia <Nia@Example.com>"
    assert message["Subject"] == "Please confirm your subscription to Killer Tracks"
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None
    link = confirm_link(message)

    # Opening the link (a scanner, or the person) changes nothing.
    page = client.get(link)
    assert page.status_code == 200 and b"n***@e***.com" in page.data
    assert consents(session_factory) == 0

    done = client.post(link, data={"csrf": csrf(page.data)}, headers={"User-Agent": "Chromium/1"})
    assert done.status_code == 200 and b"You are subscribed" in done.data
    with session_scope(session_factory) as session:
        address = find_address(session, "nia@example.com")
        assert address is not None
        state = current_consent(session, address.id, Scope.MARKETING)
        assert state is not None and state.status == ConsentStatus.OPTED_IN
        assert current_consent(session, address.id, Scope.AFFILIATES) is None
        row = session.scalars(select(SignupRequest)).one()
        assert row.message_id == message["Message-ID"]
        assert (row.mail_status, row.request_user_agent, row.confirm_user_agent) == (
            "sent",
            "Firefox/128",
            "Chromium/1",
        )
        assert row.confirm_ip == "127.0.0.1"
    # The page links to the person's preferences.
    pref = re.search(rb'href="(/preferences/[^"]+)"', done.data).group(1).decode()  # type: ignore[union-attr]
    assert client.get(pref).status_code == 200


def test_the_same_answer_for_new_known_suppressed_and_limited_addresses(
    client: FlaskClient, settings: Settings, session_factory
) -> None:
    with session_scope(session_factory) as session:
        make_contact(session, "known@example.com")
        make_contact(session, "bounced@example.com", suppressed=Reason.HARD_BOUNCE)
        make_contact(session, "postal@example.com", suppressed=Reason.POSTAL_REQUEST)
    before = consents(session_factory)
    pages = []
    for address in [
        "new@example.com",
        "known@example.com",
        "bounced@example.com",
        "postal@example.com",
        "new@example.com",
    ]:
        response = post(client, "/subscribe", form_data(client, email=address, marketing="yes"))
        assert response.status_code == 200
        pages.append(re.sub(r'value="[^"]+"', "", response.data.decode()))
    assert len(set(pages)) == 1
    delivered = sorted(m["To"] for m in outbox(settings))
    assert delivered == ["known@example.com", "new@example.com"]
    assert consents(session_factory) == before


def test_honeypot_gets_the_same_answer_and_nothing(
    client: FlaskClient, settings: Settings, session_factory
) -> None:
    data = form_data(client, email="bot@example.com", marketing="yes", comment="http://spam")
    response = post(client, "/subscribe", data)
    assert response.status_code == 200 and SAME_ANSWER in response.data.decode()
    assert outbox(settings) == []
    assert events(session_factory)[-1].detail["action"] == "honeypot"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"email": "not-an-address", "marketing": "yes"}, "this e-mail address cannot be used"),
        ({"email": "", "marketing": "yes"}, "Enter your e-mail address"),
        ({"email": "a@example.com"}, "Tick at least one box"),
        ({"email": "a@example.com", "marketing": "yes", "first_name": "A\r\nBcc: x"}, "line break"),
        ({"email": "a@example.com", "marketing": "yes", "first_name": "x" * 201}, "longer than"),
    ],
)
def test_a_form_to_correct_is_shown_again_with_what_to_fix(
    client: FlaskClient, settings: Settings, fields: dict[str, str], error: str
) -> None:
    response = post(client, "/subscribe", form_data(client, **fields))
    assert response.status_code == 400
    assert error.lower() in response.data.decode().lower()
    assert outbox(settings) == []


def test_a_post_without_our_form_token_is_refused(client: FlaskClient, settings: Settings) -> None:
    response = post(client, "/subscribe", {"email": "a@example.com", "marketing": "yes"})
    assert response.status_code == 400 and b"open for too long" in response.data
    assert b'value="a@example.com"' in response.data
    assert outbox(settings) == []


def test_requests_over_the_ip_limit_get_429_and_no_mail(settings: Settings) -> None:
    client = create_app(settings.replace(signup_ip_limit=3)).test_client()
    token = csrf(client.get("/subscribe").data)
    codes = [
        post(
            client,
            "/subscribe",
            {"csrf": token, "email": f"p{i}@example.com", "marketing": "yes"},
        ).status_code
        for i in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]
    assert len(outbox(settings)) == 3
    link = {"csrf": csrf(client.get("/preferences-link").data), "email": "p0@example.com"}
    assert post(client, "/preferences-link", link).status_code == 429  # one limit, both forms


def test_bad_and_expired_confirmation_links_change_nothing(
    client: FlaskClient, settings: Settings, session_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    post(client, "/subscribe", form_data(client, email="e@example.com", marketing="yes"))
    link = confirm_link(outbox(settings)[0])
    page = client.get(link)
    for bad in (link[:-4] + "AAAA", "/subscribe/confirm/garbage"):
        assert client.get(bad).status_code == 400
        response = client.post(bad, data={"csrf": csrf(page.data)})
        assert response.status_code == 400 and b"not valid" in response.data
    with session_scope(session_factory) as session:
        signup_id = session.scalars(select(SignupRequest.id)).one()
    old = signed_ago(
        monkeypatch,
        TokenSigner(settings.secret_keys),
        LinkPurpose.SIGNUP_CONFIRM,
        {"s": signup_id},
        settings.signup_link_seconds + 60,
    )
    response = client.post(f"/subscribe/confirm/{old}", data={"csrf": csrf(page.data)})
    assert response.status_code == 400 and b"has expired" in response.data
    # Without the page's form token (a cross-site post), nothing either.
    assert client.post(link, data={}).status_code == 400
    assert consents(session_factory) == 0


def test_confirmation_refused_when_suppressed_meanwhile(
    client: FlaskClient, settings: Settings, session_factory
) -> None:
    post(client, "/subscribe", form_data(client, email="late@example.com", marketing="yes"))
    with session_scope(session_factory) as session:
        make_contact(session, "late@example.com", marketing=None, suppressed=Reason.COMPLAINT)
    link = confirm_link(outbox(settings)[0])
    response = client.post(link, data={"csrf": csrf(client.get(link).data)})
    assert response.status_code == 409 and b"complaint" in response.data
    assert consents(session_factory) == 0


def test_a_confirmation_for_another_spelling_of_a_contact_is_refused_with_a_page(
    client: FlaskClient, settings: Settings, session_factory
) -> None:
    """``Straße@`` confirmed; the contact ``strasse@`` is another mailbox: nothing recorded."""
    with session_scope(session_factory) as session:
        make_contact(session, "strasse@example.com", marketing=None)
    before = consents(session_factory)
    post(client, "/subscribe", form_data(client, email="Straße@example.com", marketing="yes"))
    link = confirm_link(outbox(settings)[0])
    response = client.post(link, data={"csrf": csrf(client.get(link).data)})
    assert response.status_code == 409 and b"spelled another way" in response.data
    assert consents(session_factory) == before


def test_preferences_link_request(client: FlaskClient, settings: Settings, session_factory) -> None:
    with session_scope(session_factory) as session:
        make_contact(session, "Ann@Example.com", first_name="Ann")
    pages = []
    for address in ["ann@example.com", "stranger@example.com", "ANN@example.com"]:
        data = form_data(client, "/preferences-link", email=address)
        response = post(client, "/preferences-link", data)
        assert response.status_code == 200
        pages.append(re.sub(r'value="[^"]+"', "", response.data.decode()))
    assert len(set(pages)) == 1 and "If this address belongs to one of our contacts" in pages[0]
    [message] = outbox(settings)
    assert message["To"] == "Ann <Ann@Example.com>" and message["List-Unsubscribe"] is None
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    path = re.search(r"http://[^/]+(/preferences/\S+)", text).group(1)  # type: ignore[union-attr]
    assert b"a***@e***.com" in client.get(path).data


def test_a_mail_that_cannot_go_is_recorded_and_gives_its_daily_slot_back(
    tmp_path: Path, settings: Settings, session_factory
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the outbox should be")
    broken = create_app(settings.replace(mail_url=f"maildir://{blocked}")).test_client()
    post(broken, "/subscribe", form_data(broken, email="f@example.com", marketing="yes"))
    with session_scope(session_factory) as session:
        assert session.scalars(select(SignupRequest.mail_status)).all() == ["failed"]
    working = create_app(settings).test_client()
    post(working, "/subscribe", form_data(working, email="f@example.com", marketing="yes"))
    assert [m["To"] for m in outbox(settings)] == ["f@example.com"]


def test_every_signup_page_is_plain_accessible_html_with_the_security_headers(
    settings: Settings, session_factory
) -> None:
    client = create_app(settings.replace(signup_ip_limit=4)).test_client()
    pages = {"form": client.get("/subscribe")}
    pages["form error"] = post(client, "/subscribe", form_data(client, email="x"))
    pages["sent"] = post(
        client, "/subscribe", form_data(client, email="c@example.com", marketing="yes")
    )
    link = confirm_link(outbox(settings)[0])
    pages["confirm"] = client.get(link)
    pages["confirmed"] = client.post(link, data={"csrf": csrf(pages["confirm"].data)})
    pages["invalid link"] = client.get("/subscribe/confirm/garbage")
    pages["link form"] = client.get("/preferences-link")
    pages["link sent"] = post(
        client, "/preferences-link", form_data(client, "/preferences-link", email="c@example.com")
    )
    pages["link form error"] = post(
        client, "/preferences-link", form_data(client, "/preferences-link", email="nope")
    )
    pages["too many"] = post(
        client, "/subscribe", form_data(client, email="d@example.com", marketing="yes")
    )
    assert pages["too many"].status_code == 429
    assert pages["too many"].headers["Retry-After"] == "3600"
    for name, response in pages.items():
        assert response.mimetype == "text/html", name
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'"), name
        assert response.headers["X-Frame-Options"] == "DENY", name
        body = response.data.decode()
        assert "<script" not in body and " style=" not in body, name
        assert not re.search(r'(src|href|action)="(https?:)?//', body), name
        page = _Page()
        page.feed(body)
        assert page.lang == "en" and page.title and page.h1 == 1, name
        assert all(i and i in page.labels for i in page.inputs), f"{name}: input without label"
        assert all(page.buttons), f"{name}: button without text"


def test_no_address_in_the_log_when_a_mail_cannot_go(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    broken = create_app(settings.replace(mail_url=f"maildir://{blocked}")).test_client()
    with caplog.at_level("DEBUG"):
        post(
            broken,
            "/subscribe",
            form_data(broken, email="secret.person@example.com", marketing="yes"),
        )
    assert "could not be sent" in caplog.text
    assert "secret.person" not in caplog.text.lower()
