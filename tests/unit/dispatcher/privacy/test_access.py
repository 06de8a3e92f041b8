"""Access: the export lists every row of every table that mentions the person."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.campaigns.fanout import create_deliveries
from dispatcher.cli import main
from dispatcher.db import session_scope
from dispatcher.models import Campaign
from dispatcher.privacy.access import PersonNotFound, person_record
from dispatcher.settings import Settings
from suppression.events import Hit, record_event
from suppression.models import Base, ConsentStatus, Event, Reason
from suppression.suppressions import add_suppression, lift_suppressions
from tests.factories import make_contact


def rows_mentioning(session: Session, address_id: int, contact_id: int) -> dict[str, int]:
    """Rows per table that point at the person, found by searching every table."""
    found: dict[str, int] = {}
    for table in Base.metadata.sorted_tables:
        clauses = []
        if "address_id" in table.c:
            clauses.append(table.c.address_id == address_id)
        if "contact_id" in table.c:
            clauses.append(table.c.contact_id == contact_id)
        if table.name == "addresses":
            clauses.append(table.c.id == address_id)
        if table.name == "contacts":
            clauses.append(table.c.id == contact_id)
        for clause in clauses:
            n = session.scalar(select(func.count()).select_from(table).where(clause)) or 0
            if n:
                found[table.name] = max(found.get(table.name, 0), n)
    return found


def test_export_lists_every_row_that_mentions_the_person(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        contact = make_contact(
            session, "ann@example.org", affiliates=ConsentStatus.OPTED_IN, attributes={"k": "v"}
        )
        make_contact(session, "bob@example.org")
        add_suppression(
            session, contact.address_id, scope="global", reason=Reason.POSTAL_REQUEST, source="t"
        )
        lift_suppressions(session, contact.address_id, why="letter withdrawn", actor="staff")
        record_event(
            session,
            "web_hit",
            address_id=contact.address_id,
            hit=Hit(ip="192.0.2.9", user_agent="UA/1"),
            outcome="valid",
        )
        campaign = Campaign(name="March", subject="s", template="new-releases", purpose="marketing")
        session.add(campaign)
        session.flush()
        create_deliveries(session, campaign)
        aid, cid = contact.address_id, contact.id
    with session_scope(session_factory) as session:
        expected = rows_mentioning(session, aid, cid)
        doc = person_record(session, " ANN@example.org ", actor="dpo")
    assert doc["contact"]["attributes"] == {"k": "v"}
    assert len(doc["consent_ledger"]) == expected["consents"] == 2
    assert doc["consent_now"]["marketing"]["status"] == "opted_in"
    assert len(doc["suppressions"]) == expected["suppressions"] == 1
    assert doc["suppressions"][0]["lifted_by"] == "staff"
    assert len(doc["deliveries"]) == expected["deliveries"] == 1
    assert doc["deliveries"][0]["campaign"] == "March"
    # Events listed are those before this request (the request itself is audited after).
    assert len(doc["events"]) == expected["events"]
    assert any(e["ip"] == "192.0.2.9" for e in doc["events"])
    covered = {
        "addresses",
        "contacts",
        "consents",
        "consent_states",
        "suppressions",
        "deliveries",
        "events",
    }
    assert set(expected) - covered <= set(doc["other_records"])
    with session_scope(session_factory) as session:
        audited = session.scalar(select(func.count()).where(Event.kind == "person_exported"))
        assert audited == 1


def test_unknown_person_is_said_plainly(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session, pytest.raises(PersonNotFound):
        person_record(session, "nobody@example.org", actor="dpo")


def test_cli_export_writes_a_private_file(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with session_scope(session_factory) as session:
        make_contact(session, "ann@example.org")
    out = tmp_path / "ann.json"
    env = {
        "DISPATCHER_HOME": str(settings.home),
        "DISPATCHER_SECRET_KEYS": ",".join(settings.secret_keys),
    }
    result = CliRunner().invoke(
        main, ["person", "export", "ann@example.org", "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o600
    assert json.loads(out.read_text())["address"] == "ann@example.org"
    result = CliRunner().invoke(
        main, ["person", "erase", "ann@example.org", "--reason", "req 1"], env=env
    )
    assert result.exit_code == 0 and "erased" in result.output
    result = CliRunner().invoke(main, ["person", "export", "ann@example.org"], env=env)
    assert result.exit_code == 1 and "no data is held" in result.output
