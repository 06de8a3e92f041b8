"""An import keeps the latest word on consent: in one file, across files, in any order."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.importer import import_contacts
from tests.unit.dispatcher.contacts.test_contacts import states

HEADER = "email,marketing_consent,affiliates_consent,consent_at\n"


def write(tmp_path: Path, body: str, name: str = "c.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def test_a_later_opt_out_on_another_row_of_the_same_file_wins(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """The defect: the first row was kept and the later opt-out skipped as a duplicate."""
    path = write(
        tmp_path,
        "ann@example.com,yes,yes,2015-01-01\n"
        "ann@example.com,no,,2016-01-01\n"
        "ann@example.com,,no,2017-01-01\n",
    )
    import_contacts(session_factory, path, source="test")
    assert states(session_factory) == {
        ("ann@example.com", "marketing"): "opted_out",
        ("ann@example.com", "affiliates"): "opted_out",
    }
