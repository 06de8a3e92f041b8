"""Contacts import details beyond test_contacts_import.py: every column lands where it should,
consent spellings, updates on a later import, limits, BOM and naive times, the demo file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.importer import ImportReport, import_contacts
from dispatcher.db import session_scope
from dispatcher.models import Contact, ContactTag
from suppression.models import Address, Consent, ConsentState, Event

HEADER = (
    "email,first_name,last_name,marketing_consent,affiliates_consent,"
    "consent_source,consent_at,tags,genre\n"
)
DEMO = Path(__file__).resolve().parents[4] / "dispatcher" / "demo" / "contacts.csv"


def write(tmp_path: Path, body: str, header: str = HEADER, name: str = "c.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def run(factory: sessionmaker[Session], path: Path, chunk_size: int = 1000) -> ImportReport:
    return import_contacts(
        factory,
        path,
        source="test-import",
        actor="tester",
        policy_version="v1",
        chunk_size=chunk_size,
    )


def count(factory: sessionmaker[Session], model: type) -> int:
    with session_scope(factory) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def states(factory: sessionmaker[Session]) -> dict[tuple[str, str], str]:
    with session_scope(factory) as session:
        rows = session.execute(
            select(Address.address, ConsentState.scope, ConsentState.status).join(
                Address, Address.id == ConsentState.address_id
            )
        )
        return {(a, scope): status for a, scope, status in rows}


def test_every_column_lands_where_it_should(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    at = datetime(2015, 1, 2, 3, 4, 5, tzinfo=UTC)
    path = write(
        tmp_path,
        "Ann@Example.COM,Ann,Adler,yes,no,signup form,2015-01-02T03:04:05Z,Jazz; rock,Jazz\n"
        "bob@example.org,Bob,,opted_out,,,2015-02-03,,\n",
    )
    report = run(session_factory, path)
    assert (report.read, report.created, report.invalid) == (2, 2, 0)
    with session_scope(session_factory) as session:
        ann = session.scalars(
            select(Contact)
            .join(Address, Address.id == Contact.address_id)
            .where(Address.address == "ann@example.com")
        ).one()
        assert ann.submitted_address == "Ann@Example.COM"
        assert (ann.first_name, ann.last_name, ann.source) == ("Ann", "Adler", "signup form")
        assert ann.attributes == {"genre": "Jazz"} and ann.collected_at == at
        tags = set(session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == ann.id)))
        assert tags == {"jazz", "rock"}
        ledger = session.scalars(
            select(Consent).where(
                Consent.address_id == ann.address_id, Consent.scope == "marketing"
            )
        ).one()
        assert (ledger.source, ledger.actor, ledger.policy_version) == (
            "signup form",
            "tester",
            "v1",
        )
        assert ledger.occurred_at == at
        # no consent_source: the import's source; a date alone is midnight UTC
        bob = session.scalars(select(Consent).where(Consent.address_id != ann.address_id)).one()
        assert bob.source == "test-import"
        assert bob.occurred_at == datetime(2015, 2, 3, tzinfo=UTC)
        kinds = set(session.scalars(select(Event.kind)))
    assert kinds == {"consent_changed", "contacts_imported"}
    assert states(session_factory) == {
        ("ann@example.com", "marketing"): "opted_in",
        ("ann@example.com", "affiliates"): "opted_out",
        ("bob@example.org", "marketing"): "opted_out",
    }


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("yes", "opted_in"),
        ("TRUE", "opted_in"),
        ("1", "opted_in"),
        ("opted_in", "opted_in"),
        ("no", "opted_out"),
        ("false", "opted_out"),
        ("0", "opted_out"),
        ("Opted_Out", "opted_out"),
    ],
)
def test_consent_spellings(
    tmp_path: Path, session_factory: sessionmaker[Session], value: str, status: str
) -> None:
    run(session_factory, write(tmp_path, f"a@example.com,,,{value},,,2015-01-01,,\n"))
    assert states(session_factory) == {("a@example.com", "marketing"): status}


def test_a_later_import_updates_names_attributes_and_adds_tags(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    run(session_factory, write(tmp_path, "a@example.com,A,,yes,,,2015-01-01,jazz,jazz\n"))
    tagged = run(session_factory, write(tmp_path, "a@example.com,A,,yes,,,2015-01-01,rock,jazz\n"))
    assert (tagged.updated, tagged.unchanged) == (1, 0)  # a new tag is a change
    report = run(session_factory, write(tmp_path, "a@example.com,Ada,,yes,,,2015-01-01,,blues\n"))
    assert (report.updated, report.unchanged) == (1, 0)
    with session_scope(session_factory) as session:
        contact = session.scalars(select(Contact)).one()
        assert contact.first_name == "Ada" and contact.attributes == {"genre": "blues"}
        assert set(session.scalars(select(ContactTag.tag))) == {"jazz", "rock"}
    assert count(session_factory, Consent) == 1


def test_a_second_row_of_an_address_in_a_later_chunk_still_counts(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    body = "".join(f"p{i}@example.com,,,yes,,,2015-01-01,t{i % 3},\n" for i in range(25))
    body += "P3@example.com,,,no,,,,t9,\n"  # an opt-out without a time wins
    report = run(session_factory, write(tmp_path, body), chunk_size=7)
    assert report.created == 25 and report.invalid == 0
    assert states(session_factory)[("p3@example.com", "marketing")] == "opted_out"
    assert count(session_factory, ContactTag) == 26


def test_too_long_values_are_row_errors(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    path = write(
        tmp_path,
        f"a@example.com,,,yes,,,,{'x' * 101},\n"
        f"b@example.com,{'y' * 201},,yes,,,,,\n"
        "c@example.com,,,,,,,ok,\n",
    )
    report = run(session_factory, path)
    assert [(e.line, e.field) for e in report.errors] == [(2, "tags"), (3, "first_name")]
    assert count(session_factory, Contact) == 1


def test_future_consent_time_is_refused(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    report = run(session_factory, write(tmp_path, "a@example.com,,,yes,,,2999-01-01,,\n"))
    assert [(e.line, e.field) for e in report.errors] == [(2, "consent_at")]
    assert "future" in report.errors[0].reason


def test_a_time_at_the_edge_of_the_calendar_is_a_row_error_not_a_crash(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """Red team: 0001-01-01T00:00+01:00 is before the calendar's first day in UTC, and the
    OverflowError of converting it stopped the import with a traceback."""
    path = write(
        tmp_path,
        "bob@example.com,,,no,,,2024-01-01,,\n"
        "ann@example.com,,,yes,,,0001-01-01T00:00:00+01:00,,\n"
        "cat@example.com,,,yes,,,9999-12-31T23:00:00-05:00,,\n",
    )
    report = run(session_factory, path)
    assert [(e.line, e.field) for e in report.errors] == [(3, "consent_at"), (4, "consent_at")]
    assert "outside the calendar" in report.errors[0].reason
    assert states(session_factory) == {("bob@example.com", "marketing"): "opted_out"}


@pytest.mark.parametrize(
    "placeholder",
    ["0001-01-01", "0999-06-01", "1753-01-01", "1899-12-30", "1970-01-01T00:00:00Z", "1979-12-31"],
)
def test_a_consent_time_before_1980_is_a_row_error(
    tmp_path: Path, session_factory: sessionmaker[Session], placeholder: str
) -> None:
    """What systems write for "no date" (and year typos) would rank an opt-out before every
    opt-in: refused, with a hint to leave the time empty (an undated opt-out wins)."""
    path = write(
        tmp_path, f"a@example.com,,,no,,,{placeholder},,\nb@example.com,,,no,,,1980-01-01,,\n"
    )
    report = run(session_factory, path)
    assert [(e.line, e.field) for e in report.errors] == [(2, "consent_at")]
    assert "before 1980" in report.errors[0].reason and "empty" in report.errors[0].reason
    assert states(session_factory) == {("b@example.com", "marketing"): "opted_out"}


def test_byte_order_mark_and_naive_times(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "\ufeffemail,marketing_consent,consent_at\na@example.com,yes,2015-06-07T08:09:10\n".encode()
    )
    report = run(session_factory, path)
    assert report.created == 1 and not report.errors
    with session_scope(session_factory) as session:
        at = session.scalar(select(ConsentState.occurred_at))
    assert at == datetime(2015, 6, 7, 8, 9, 10, tzinfo=UTC)


def test_demo_file_imports_with_its_deliberate_errors(
    session_factory: sessionmaker[Session],
) -> None:
    report = run(session_factory, DEMO)
    assert {"email", "marketing_consent", "consent_at"} <= {e.field for e in report.errors}
    # ann.adler0 is on two rows: one contact, the undated second row kept as history
    assert report.created == report.read - report.invalid - 1
    assert report.consent["marketing:history"] == 1
    assert count(session_factory, Contact) == report.created
    assert {s for (_, _), s in states(session_factory).items()} == {"opted_in", "opted_out"}
    never_asked = report.created - len({a for a, _ in states(session_factory)})
    assert never_asked > 0
