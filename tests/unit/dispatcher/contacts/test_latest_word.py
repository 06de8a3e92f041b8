"""An import keeps the latest word on consent: in one file, across files, in any order."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.importer import import_contacts
from dispatcher.db import session_scope
from suppression.models import Consent, Event
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
    report = import_contacts(session_factory, path, source="test")
    assert report.consent == {
        "marketing:changed": 1,
        "marketing:history": 1,
        "affiliates:changed": 1,
        "affiliates:history": 1,
    }
    with session_scope(session_factory) as session:
        events = session.scalars(select(Event.outcome).where(Event.kind == "consent_changed"))
        assert sorted(events) == ["opted_out", "opted_out"]
        assert len(session.scalars(select(Consent.id)).all()) == 4  # history kept
    assert states(session_factory) == {
        ("ann@example.com", "marketing"): "opted_out",
        ("ann@example.com", "affiliates"): "opted_out",
    }
