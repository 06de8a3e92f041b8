"""Console pages beyond campaigns: they call the CLI's services and keep its rules."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from dispatcher.db import session_scope
from dispatcher.models import Affiliate, Campaign, Contact
from suppression.events import Hit
from suppression.models import Event, Reason, Suppression
from tests.factories import make_campaign, make_contact
from tests.unit.dispatcher.console.conftest import PASSWORD, csrf, make_staff, post
from tests.unit.dispatcher.console.test_console import new_campaign


def test_schedule_later_in_the_staff_time_zone_is_stored_in_utc(signed_in, session_factory):
    client = signed_in("editor")
    new_campaign(client)
    data = {"when": "later", "date": "2030-07-01", "time": "09:30", "tz": "Europe/Paris"}
    response = post(client, "/campaigns/1/schedule", data, "/campaigns/1")
    assert response.status_code == 302
    with session_scope(session_factory) as session:
        assert session.get(Campaign, 1).scheduled_at == datetime(2030, 7, 1, 7, 30, tzinfo=UTC)
    page = client.get("/campaigns/1").get_data(as_text=True)
    assert "2030-07-01 09:30 Europe/Paris (2030-07-01 07:30 UTC)" in page


def test_contacts_upload_gives_the_per_row_report(signed_in, session_factory):
    client = signed_in("editor")
    csv = (
        "email,first_name,last_name,marketing_consent,affiliates_consent,consent_source,consent_at\n"
        "ann@example.com,Ann,A,yes,no,shop,2025-01-01T00:00:00+00:00\n"
        "not-an-address,Bob,B,yes,no,shop,2025-01-01T00:00:00+00:00\n"
    )
    response = client.post(
        "/contacts/import",
        data={
            "csrf_token": csrf(client, "/contacts/import"),
            "file": (io.BytesIO(csv.encode()), "list.csv"),
        },
        content_type="multipart/form-data",
    )
    # Imported in the background: the job's page polls its progress, then shows the report.
    assert response.status_code == 302
    job_page = response.headers["Location"]
    deadline = time.monotonic() + 60
    while (state := client.get(f"{job_page}.json").get_json())["state"] == "running":
        assert time.monotonic() < deadline, "the import did not end within 60 s"
        time.sleep(0.05)
    assert state["state"] == "done" and state["rows_in_file"] == 2
    assert state["bytes_done"] == state["bytes_total"] == len(csv.encode())
    assert "staff" not in state
    page = client.get(job_page).get_data(as_text=True)
    assert "<dt>Created</dt><dd>1</dd>" in page and "<td>3</td><td>email</td>" in page
    with session_scope(session_factory) as session:
        assert len(list(session.scalars(select(Contact)))) == 1
        (event,) = session.scalars(
            select(Event).where(Event.kind == "console_contacts_import")
        ).all()
        assert event.actor == "editor@staff.example" and event.detail["created"] == 1
    # Someone else's import is not theirs to read (an admin's would be).
    other = signed_in("editor", "other@staff.example")
    assert other.get(job_page).status_code == 404
    assert other.get(f"{job_page}.json").status_code == 404
    assert signed_in("admin").get(job_page).status_code == 200


def test_only_an_admin_lifts_a_suppression_and_says_why(signed_in, session_factory):
    with session_scope(session_factory) as session:
        make_contact(session, "b@example.com", suppressed=Reason.HARD_BOUNCE)
    editor = signed_in("editor")
    data = {"address": "b@example.com", "reason": "mailbox fixed"}
    assert post(editor, "/people/lift", data, "/people").status_code == 403
    admin = signed_in("admin")
    assert post(admin, "/people/lift", {**data, "reason": ""}, "/people").status_code == 302
    with session_scope(session_factory) as session:
        assert session.scalar(select(Suppression.lifted_at)) is None
    assert post(admin, "/people/lift", data, "/people").status_code == 302
    with session_scope(session_factory) as session:
        row = session.scalar(select(Suppression))
        assert row.lifted_by == "admin@staff.example" and row.lift_reason == "mailbox fixed"


def test_suppress_by_hand_and_affiliate_add_export(signed_in, session_factory):
    client = signed_in("admin")
    data = {"address": "p@example.com", "reason": "postal_request", "note": "letter"}
    post(client, "/suppressions", data, "/suppressions")
    with session_scope(session_factory) as session:
        row = session.scalar(select(Suppression))
        assert (row.reason, row.note, row.created_by) == (
            "postal_request",
            "letter",
            "admin@staff.example",
        )
    data = {
        "action": "add",
        "name": "partner",
        "contact": "p@partner.example",
        "fields": "email,first_name",
    }
    page = post(client, "/affiliates", data, "/affiliates").get_data(as_text=True)
    assert "partner." in page and "shown once" in page
    page = post(client, "/affiliates", {"action": "export", "name": "partner"}, "/affiliates")
    assert "/affiliates/download/" in page.get_data(as_text=True)
    with session_scope(session_factory) as session:
        assert session.scalar(select(Affiliate.name)) == "partner"


def test_an_ip_with_many_failed_sign_ins_is_refused_for_a_while(app, settings, session_factory):
    from dispatcher.console.staff import IP_FAILURES
    from suppression.events import record_event

    make_staff(settings, session_factory, "ok@staff.example", "viewer")
    with session_scope(session_factory) as session:
        for _ in range(IP_FAILURES):
            record_event(session, "staff_sign_in", hit=Hit(ip="127.0.0.1"), outcome="unknown")
    client = app.test_client()
    data = {"email": "ok@staff.example", "password": PASSWORD, "csrf_token": csrf(client)}
    response = client.post("/sign-in", data=data)
    assert response.status_code == 429
    with session_scope(session_factory) as session:
        last = session.scalar(select(Event).order_by(Event.id.desc()))
        assert (last.kind, last.outcome) == ("staff_sign_in", "throttled")


def test_only_an_admin_downloads_a_persons_data_and_it_is_audited(signed_in, session_factory):
    import json

    with session_scope(session_factory) as session:
        make_contact(session, "ann@example.com", first_name="Ann")
    data = {"address": "ann@example.com"}
    assert post(signed_in("editor"), "/people/export", data, "/people").status_code == 403
    admin = signed_in("admin")
    assert "Download everything we hold" in admin.get("/people?address=ann@example.com").text
    response = post(admin, "/people/export", data, "/people")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert "attachment" in response.headers["Content-Disposition"]
    doc = json.loads(response.get_data(as_text=True))
    assert doc["address"] == "ann@example.com" and doc["contact"]["first_name"] == "Ann"
    with session_scope(session_factory) as session:
        audited = session.scalar(select(Event).where(Event.kind == "person_exported"))
        assert audited is not None and audited.actor == "admin@staff.example"
    missing = post(admin, "/people/export", {"address": "nobody@example.com"}, "/people")
    assert missing.status_code == 302


def test_a_campaign_in_trouble_says_so_on_the_list_and_its_page(signed_in, session_factory):
    from dispatcher.campaigns.problems import record_task_error
    from dispatcher.sending.transports import RelayLoginRefused

    with session_scope(session_factory) as session:
        campaign = make_campaign(session, name="stuck")
        said = record_task_error(
            session, campaign.id, "send_batch", RelayLoginRefused("refused"), 1, 5
        )
        campaign_id = campaign.id
    client = signed_in("viewer")
    listing = client.get("/campaigns").get_data(as_text=True)
    assert "! errors" in listing
    page = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert "What is wrong" in page and said.code in page and "DISPATCHER_MAIL_URL" in page


def test_a_campaign_whose_recipients_are_still_being_added_says_so(signed_in, session_factory):
    with session_scope(session_factory) as session:
        ids = make_campaign(session, fanning_out=True).id, make_campaign(session).id
    client = signed_in("viewer")
    page = client.get(f"/campaigns/{ids[0]}").get_data(as_text=True)
    assert 'id="adding-recipients"' in page and "still being added" in page
    assert 'id="adding-recipients"' not in client.get(f"/campaigns/{ids[1]}").get_data(as_text=True)


@pytest.mark.parametrize(
    ("target", "lands"),
    [
        ("/campaigns/3", "/campaigns/3"),
        ("/\t/evil.example/", "/campaigns"),
        ("/\t\t/evil.example/", "/campaigns"),
        ("/\n/evil.example/", "/campaigns"),
        ("//evil.example/", "/campaigns"),
        ("/\\evil.example/", "/campaigns"),
        ("https://evil.example/", "/campaigns"),
    ],
)
def test_after_sign_in_next_leads_only_to_a_page_of_the_console(
    app, settings, target: str, lands: str
) -> None:
    """Browsers drop tabs and line breaks from a URL, so ``/<tab>/evil.example`` is
    ``//evil.example`` to them: a sign-in link could have sent staff on to another site
    (found by the red-team pass; a line break answered 500)."""
    make_staff(settings, app.extensions["dispatcher.sessions"], "ed@staff.example", "editor")
    client = app.test_client()
    response = client.post(
        "/sign-in",
        query_string={"next": target},
        data={"email": "ed@staff.example", "password": PASSWORD, "csrf_token": csrf(client)},
    )
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == lands
