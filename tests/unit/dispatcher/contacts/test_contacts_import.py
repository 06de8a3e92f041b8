"""Importing contacts: invalid rows reported and skipped, valid rows in, idempotent."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.importer import ImportFileError, import_contacts
from dispatcher.db import session_scope
from dispatcher.models import Contact, ContactTag
from dispatcher.settings import Settings
from suppression.consent import current_consent
from suppression.models import Consent, Scope
from suppression.registry import find_address
from workers.cli import main

HEADER = (
    "email,first_name,last_name,marketing_consent,affiliates_consent,consent_source,"
    "consent_at,tags,genre\n"
)


def write(tmp_path: Path, body: str, header: str = HEADER, name: str = "c.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def count(sessions: sessionmaker[Session], model: type) -> int:
    with session_scope(sessions) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def marketing(sessions: sessionmaker[Session], address: str) -> str | None:
    with session_scope(sessions) as session:
        row = find_address(session, address)
        state = current_consent(session, row.id, Scope.MARKETING) if row else None
        return state.status if state else None


def test_valid_rows_go_in_and_invalid_rows_are_named(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        (
            "Ann@Example.com,Ann,Lee,yes,no,checkout,2015-03-01,jazz;Blues,jazz\n"
            "not-an-address,Bad,Row,yes,,,,,\n"
            "bob@example.com,Bob,Ray,perhaps,,,,,\n"
            "cat@example.com,Cat,Kim,yes,,,next tuesday,,\n"
            "ANN@example.com,Second,Row,yes,,,,,\n"
            "dee@example.com,Dee,,,,,,,folk\n"
            "eve@example.com,Eve\\r,,yes,,,,,\n"
        ),
    )
    report = import_contacts(session_factory, path, source="test")
    assert (report.read, report.created, report.invalid) == (7, 3, 3)
    assert [(e.line, e.field) for e in report.errors] == [
        (3, "email"),
        (4, "marketing_consent"),
        (5, "consent_at"),
    ]
    # Ann's second row, undated, is history: her dated row keeps her name
    assert report.consent["marketing:history"] == 1
    assert marketing(session_factory, "ann@example.com") == "opted_in"
    assert marketing(session_factory, "dee@example.com") is None  # never asked: nothing
    with session_scope(session_factory) as session:
        ann = session.scalar(select(Contact).where(Contact.first_name == "Ann"))
        assert ann.attributes == {"genre": "jazz"} and ann.source == "checkout"
        tags = set(session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == ann.id)))
        assert tags == {"jazz", "blues"}


def test_reimport_is_idempotent_and_never_turns_an_opt_out_into_an_opt_in(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    first = write(tmp_path, "ann@example.com,Ann,Lee,no,,,2015-01-01,,\n", name="a.csv")
    import_contacts(session_factory, first, source="test")
    ledger = count(session_factory, Consent)
    again = import_contacts(session_factory, first, source="test")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 1)
    assert count(session_factory, Consent) == ledger

    newer = write(tmp_path, "ann@example.com,Ann,Lee,yes,,,2016-01-01,,\n", name="b.csv")
    report = import_contacts(session_factory, newer, source="test")
    assert report.consent["marketing:refused"] == 1
    assert [(r.line, r.field) for r in report.refused] == [(2, "marketing_consent")]
    assert marketing(session_factory, "ann@example.com") == "opted_out"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"name,phone\nAnn,123\n", r"lacks the column\(s\) email"),
        (b"email,email\na@example.com,b@example.com\n", "twice"),
    ],
)
def test_a_file_that_cannot_be_read_imports_nothing(
    session_factory: sessionmaker[Session], tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=message):
        import_contacts(session_factory, path, source="test")
    assert count(session_factory, Contact) == 0


def test_row_with_more_fields_than_the_header_is_named(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    path = write(tmp_path, "a@example.com,yes,extra\n", header="email,marketing_consent\n")
    report = import_contacts(session_factory, path, source="test")
    assert [(e.line, e.field) for e in report.errors] == [(2, "(row)")]
    assert count(session_factory, Contact) == 0


def test_large_file_in_chunks(session_factory: sessionmaker[Session], tmp_path: Path) -> None:
    rows = "".join(f"p{i}@example.com,P{i},,yes,,,,,\n" for i in range(1200))
    seen: list[int] = []
    report = import_contacts(
        session_factory, write(tmp_path, rows), source="test", chunk_size=500, progress=seen.append
    )
    assert report.created == 1200 and count(session_factory, Contact) == 1200
    assert len(seen) >= 3 and sum(seen) == (tmp_path / "c.csv").stat().st_size


def test_cli_reports_lines_and_exits_1_on_invalid_rows(settings: Settings, tmp_path: Path) -> None:
    path = write(tmp_path, "ann@example.com,Ann,,yes,,,,,\nbroken,,,,,,,,\n")
    env = {
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": ",".join(settings.secret_keys),
    }
    result = CliRunner().invoke(main, ["contacts", "import", str(path)], env=env)
    assert result.exit_code == 1
    assert "created        1" in result.output
    assert "line 3: email: An email address must have an @-sign." in result.output
