"""``dispatcher suppress``: staff add, list, lift and import suppressions, with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.cli import main
from dispatcher.db import session_scope
from dispatcher.models import Campaign, Delivery
from dispatcher.settings import Settings
from suppression.consent import current_consent
from suppression.models import Address, Event, Scope, Suppression
from tests.factories import make_contact


def cli(settings: Settings, *args: str) -> Result:
    env = {
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": ",".join(settings.secret_keys),
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def suppressions(factory: sessionmaker[Session]) -> list[Suppression]:
    with session_scope(factory) as session:
        return list(session.scalars(select(Suppression).order_by(Suppression.id)))


def queued_delivery(factory: sessionmaker[Session], address: str, purpose: str) -> int:
    with session_scope(factory) as session:
        contact = make_contact(session, address)
        campaign = Campaign(name="c", subject="s", template="t", purpose=purpose)
        session.add(campaign)
        session.flush()
        delivery = Delivery(
            campaign_id=campaign.id, contact_id=contact.id, address_id=contact.address_id
        )
        session.add(delivery)
        session.flush()
        return delivery.id


def delivery_status(factory: sessionmaker[Session], delivery_id: int) -> tuple[str, str | None]:
    with session_scope(factory) as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        return row.status, row.skip_reason


@pytest.mark.parametrize(
    ("reason", "scope"),
    [
        ("postal_request", "global"),
        ("legal", "global"),
        ("complaint", "global"),
        ("hard_bounce", "global"),
        ("manual", "global"),
        ("unsubscribe", "marketing"),
    ],
)
def test_add_records_reason_note_actor_and_default_scope(
    settings: Settings, session_factory: sessionmaker[Session], reason: str, scope: str
) -> None:
    result = cli(
        settings,
        "suppress",
        "add",
        " Ann@Example.com ",
        "--reason",
        reason,
        "--note",
        "letter of 2016-01-04",
        "--actor",
        "alice",
    )
    assert result.exit_code == 0, result.output
    [row] = suppressions(session_factory)
    assert (row.scope, row.reason, row.note, row.created_by, row.source) == (
        scope,
        reason,
        "letter of 2016-01-04",
        "alice",
        "staff",
    )
    again = cli(settings, "suppress", "add", "ann@example.com", "--reason", reason)
    assert again.exit_code == 0 and "already suppressed" in again.stdout
    assert len(suppressions(session_factory)) == 1


def test_add_with_an_explicit_scope(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    args = ("suppress", "add", "a@example.com", "--reason", "manual", "--scope")
    assert cli(settings, *args, "affiliate:7").exit_code == 0
    assert cli(settings, *args, "affiliates").exit_code == 0
    assert [s.scope for s in suppressions(session_factory)] == ["affiliate:7", "affiliates"]


def test_postal_request_stops_queued_marketing_and_service_mail(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    marketing = queued_delivery(session_factory, "a@example.com", "marketing")
    with session_scope(session_factory) as session:
        contact_id = session.scalar(select(Delivery.contact_id).where(Delivery.id == marketing))
        address_id = session.scalar(select(Delivery.address_id).where(Delivery.id == marketing))
        notice = Campaign(name="n", subject="s", template="t", purpose="service_notice")
        session.add(notice)
        session.flush()
        service = Delivery(campaign_id=notice.id, contact_id=contact_id, address_id=address_id)
        session.add(service)
        session.flush()
        service_id = service.id
    result = cli(settings, "suppress", "add", "a@example.com", "--reason", "postal_request")
    assert result.exit_code == 0 and "2 queued deliveries stopped" in result.stdout
    assert delivery_status(session_factory, marketing) == ("cancelled", "postal_request")
    assert delivery_status(session_factory, service_id) == ("cancelled", "postal_request")


def test_staff_unsubscribe_stops_marketing_only(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    marketing = queued_delivery(session_factory, "a@example.com", "marketing")
    service = queued_delivery(session_factory, "b@example.com", "service_notice")
    for address in ("a@example.com", "b@example.com"):
        assert cli(settings, "suppress", "add", address, "--reason", "unsubscribe").exit_code == 0
    assert delivery_status(session_factory, marketing) == ("cancelled", "unsubscribe")
    assert delivery_status(session_factory, service) == ("queued", None)


def test_staff_unsubscribe_is_the_recipients_own_unsubscribe(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Staff passing on a recipient's wish take the same path as the recipient's link: the
    suppression, an opt-out in the consent ledger and the audit event, all at once."""
    queued_delivery(session_factory, "a@example.com", "marketing")
    result = cli(settings, "suppress", "add", "a@example.com", "--reason", "unsubscribe")
    assert result.exit_code == 0 and "1 queued deliveries stopped" in result.output
    with session_scope(session_factory) as session:
        address_id = session.scalar(select(Address.id).where(Address.address == "a@example.com"))
        assert address_id is not None
        consent = current_consent(session, address_id, Scope.MARKETING)
        assert consent is not None and consent.status == "opted_out"
        event = session.scalars(select(Event).where(Event.kind == "unsubscribed")).one()
        assert (event.address_id, event.detail["source"], event.detail["stopped"]) == (
            address_id,
            "staff",
            1,
        )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["not-an-address", "--reason", "legal"], "'not-an-address'"),
        (["a@example.com", "--reason", "legal", "--scope", "everything"], "unknown scope"),
        (["a@example.com", "--reason", "whim"], "'whim'"),
    ],
)
def test_bad_input_is_named_exits_one_and_changes_nothing(
    settings: Settings, session_factory: sessionmaker[Session], args: list[str], fragment: str
) -> None:
    result = cli(settings, "suppress", "add", *args)
    assert result.exit_code != 0 and fragment in result.output
    with session_scope(session_factory) as session:
        for model in (Address, Suppression, Event):
            assert session.scalar(select(func.count()).select_from(model)) == 0


def test_list_shows_active_and_with_all_lifted_ones_as_json(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    cli(settings, "suppress", "add", "a@example.com", "--reason", "legal")
    cli(settings, "suppress", "add", "b@example.com", "--reason", "complaint", "--note", "spam")
    cli(settings, "suppress", "remove", "a@example.com", "--reason", "court order lifted")
    result = cli(settings, "suppress", "list")
    assert "b@example.com" in result.stdout and "a@example.com" not in result.stdout
    rows = json.loads(cli(settings, "suppress", "list", "--all", "--json").stdout)
    by_address = {r["address"]: r for r in rows}
    assert by_address["a@example.com"]["lift_reason"] == "court order lifted"
    assert by_address["a@example.com"]["lifted_at"] is not None
    assert by_address["b@example.com"]["note"] == "spam"
    assert by_address["b@example.com"]["lifted_at"] is None


def test_remove_lifts_every_active_suppression_with_the_reason_recorded(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    cli(settings, "suppress", "add", "a@example.com", "--reason", "legal")
    cli(settings, "suppress", "add", "a@example.com", "--reason", "hard_bounce")
    result = cli(
        settings,
        "suppress",
        "remove",
        "A@example.com",
        "--reason",
        "mailbox fixed",
        "--actor",
        "bo",
    )
    assert result.exit_code == 0 and "2 suppression(s) lifted" in result.stdout
    rows = suppressions(session_factory)
    assert {(s.lifted_by, s.lift_reason) for s in rows} == {("bo", "mailbox fixed")}
    with session_scope(session_factory) as session:
        event = session.scalars(select(Event).where(Event.kind == "suppression_lifted")).one()
    assert event.actor == "bo" and event.detail["count"] == 2


def test_remove_only_one_reason(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    cli(settings, "suppress", "add", "a@example.com", "--reason", "legal")
    cli(settings, "suppress", "add", "a@example.com", "--reason", "hard_bounce")
    result = cli(
        settings,
        "suppress",
        "remove",
        "a@example.com",
        "--reason",
        "fixed",
        "--only",
        "hard_bounce",
    )
    assert result.exit_code == 0
    assert {s.reason: s.lifted_at is None for s in suppressions(session_factory)} == {
        "legal": True,
        "hard_bounce": False,
    }


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["a@example.com"], "Missing option '--reason'"),
        (["a@example.com", "--reason", "  "], "say why"),
        (["nobody@example.com", "--reason", "x"], "not on the suppression list"),
        (["a@example.com", "--reason", "x", "--only", "complaint"], "no active suppression"),
        (["bad@@", "--reason", "x"], "'bad@@'"),
    ],
)
def test_remove_refuses_without_a_reason_or_a_suppression(
    settings: Settings, session_factory: sessionmaker[Session], args: list[str], fragment: str
) -> None:
    cli(settings, "suppress", "add", "a@example.com", "--reason", "legal")
    result = cli(settings, "suppress", "remove", *args)
    assert result.exit_code != 0 and fragment in result.output
    assert all(s.lifted_at is None for s in suppressions(session_factory))


def test_import_adds_valid_rows_and_lists_bad_ones(
    tmp_path: Path, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    path = tmp_path / "s.csv"
    path.write_text(
        "email,reason,scope,note\n"
        "a@example.com,postal_request,,letter\n"
        "nope,legal,,\n"
        "b@example.com,whim,,\n"
        "c@example.com,manual,nowhere,\n"
        "d@example.com,unsubscribe,,\n"
    )
    result = cli(settings, "suppress", "import", str(path), "--actor", "alice")
    assert result.exit_code == 1
    assert "2 added" in result.stdout
    assert "line 3: email:" in result.stderr
    assert "line 4: reason: unknown reason 'whim'" in result.stderr
    assert "line 5: scope: unknown scope 'nowhere'" in result.stderr
    rows = {(s.reason, s.scope, s.note, s.created_by) for s in suppressions(session_factory)}
    assert rows == {
        ("postal_request", "global", "letter", "alice"),
        ("unsubscribe", "marketing", None, "alice"),
    }
    again = cli(settings, "suppress", "import", str(path))
    assert "0 added, 2 already there" in again.stdout


def test_import_refuses_a_file_that_is_not_utf8(
    tmp_path: Path, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(b"email,reason,note\na@example.com,legal,J\xf6rg\n")
    result = cli(settings, "suppress", "import", str(path))
    assert result.exit_code == 1 and "not UTF-8" in result.output
    assert suppressions(session_factory) == []


def test_demo_suppressions_cover_every_reason(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    demo = Path(__file__).resolve().parents[4] / "dispatcher" / "demo" / "suppressions.csv"
    result = cli(settings, "suppress", "import", str(demo))
    assert result.exit_code == 0, result.output
    assert {s.reason for s in suppressions(session_factory)} == {
        "unsubscribe",
        "hard_bounce",
        "complaint",
        "manual",
        "postal_request",
        "legal",
    }


def test_an_erased_address_is_answered_as_already_suppressed_and_not_stored(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """The CLI passes the signer, so an erased person given again is recognised."""
    erased = cli(settings, "person", "erase", "gone@example.org", "--reason", "ticket 9")
    assert erased.exit_code == 0, erased.output
    added = cli(settings, "suppress", "add", "gone@example.org", "--reason", "legal")
    assert added.exit_code == 0, added.output
    assert "erased at its owner's request" in added.output
    path = tmp_path / "s.csv"
    path.write_text("email,reason\ngone@example.org,postal_request\n", encoding="utf-8")
    imported = cli(settings, "suppress", "import", str(path))
    assert imported.exit_code == 0, imported.output
    assert "0 added, 1 already there" in imported.output
    assert "line 2: already suppressed: erased" in imported.output
    with session_scope(session_factory) as session:
        held = session.scalars(select(Address.address)).all()
        assert [a.startswith("erased:") for a in held] == [True]
