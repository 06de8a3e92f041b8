"""The set-based import on PostgreSQL (COPY, JSONB merges, the rule's SQL): the latest-word
property, bad bytes that PostgreSQL itself refuses (NUL), and updates of existing contacts."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts.importer import import_contacts
from dispatcher.db import make_engine, make_sessionmaker, session_scope, upgrade
from dispatcher.models import Contact
from suppression.consent import record_consent
from suppression.models import Address, Consent, ConsentState, ConsentStatus, Event, Scope
from suppression.registry import ensure_address
from tests.conftest import settings_for
from tests.support.backends import postgres_database, require
from tests.support.pg import wait_until_blocked
from tests.unit.dispatcher.contacts import test_latest_word as latest_word
from tests.unit.dispatcher.contacts.test_latest_word_property import check, histories

pytestmark = pytest.mark.integration

TABLES = "events, contact_tags, contacts, consent_states, consents, addresses"


@pytest.fixture(scope="module")
def pg_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    require("postgresql")
    with postgres_database() as url:
        upgrade(settings_for(tmp_path_factory.mktemp("pg"), database_url=url))
        engine = make_engine(url)
        try:
            yield make_sessionmaker(engine)
        finally:
            engine.dispose()


def _empty(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        session.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=histories())
def test_imports_keep_the_latest_word_on_postgres(
    pg_factory: sessionmaker[Session], files: list
) -> None:
    _empty(pg_factory)
    with tempfile.TemporaryDirectory() as tmp:
        check(pg_factory, files, Path(tmp))


def test_one_row_and_several_row_addresses_mixed_on_postgres(
    pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Ledger ids from the sequence, given by the two paths of the consent merge."""
    _empty(pg_factory)
    latest_word.test_one_row_and_several_row_addresses_mixed_in_a_file_over_an_existing_ledger(
        tmp_path, pg_factory
    )


def test_each_state_an_import_writes_gets_one_event_on_postgres(
    pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """New addresses' states are written without the upsert, and their events without
    looking the states up again."""
    _empty(pg_factory)
    latest_word.test_each_state_an_import_writes_gets_one_event_naming_the_address_actor_and_source(
        tmp_path, pg_factory
    )


def test_nul_bytes_and_updates_on_postgres(
    pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _empty(pg_factory)
    path = tmp_path / "a.csv"
    path.write_bytes(
        b"email,first_name,marketing_consent,consent_at,tags,genre,city\n"
        b"a@example.com,Ann,yes,2015-01-01,jazz,jazz,\n"
        b"b@example.com,Bob,yes,2015-01-01,,ro\x00ck,\n"
        b"c@example.com,Cat,no,2015-01-01,,,Oslo\n"
    )
    report = import_contacts(pg_factory, path, source="pg")
    assert [(e.line, e.field) for e in report.errors] == [(3, "genre")]
    assert report.created == 2
    again = tmp_path / "b.csv"
    again.write_text(
        "email,first_name,marketing_consent,consent_at,tags,genre,city\n"
        "a@example.com,,yes,2015-01-01,blues,,Rome\n"
        "c@example.com,Cat,no,2015-01-01,,,Oslo\n",
        encoding="utf-8",
    )
    second = import_contacts(pg_factory, again, source="pg")
    assert (second.created, second.updated, second.unchanged) == (0, 1, 1)
    with session_scope(pg_factory) as session:
        ann = session.scalars(select(Contact).where(Contact.first_name == "Ann")).one()
        assert ann.attributes == {"genre": "jazz", "city": "Rome"}


def test_an_address_another_writer_adds_during_the_import_keeps_its_state_judged(
    pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """The import adds its new addresses with a plain INSERT and writes their states without
    the upsert. A signup that adds one of them meanwhile makes that INSERT fail: it is undone
    and done again with ON CONFLICT, and only the addresses the import itself added skip the
    upsert; the other's state is judged against the word the signup wrote."""
    _empty(pg_factory)
    path = tmp_path / "a.csv"
    path.write_text(
        "email,marketing_consent,consent_at\n"
        "ann@example.com,no,2015-01-01\n"
        "bob@example.com,yes,2015-01-01\n",
        encoding="utf-8",
    )
    engine = pg_factory.kw["bind"]
    first = pg_factory()
    first.begin()
    ann = ensure_address(first, "ann@example.com")
    record_consent(
        first,
        ann,
        Scope.MARKETING,
        ConsentStatus.OPTED_IN,
        source="signup",
        occurred_at=datetime(2010, 1, 1, tzinfo=UTC),
        recipient_action=True,
    )
    first_pid = first.scalar(text("SELECT pg_backend_pid()"))
    with ThreadPoolExecutor(max_workers=1) as pool:
        importing = pool.submit(import_contacts, pg_factory, path, source="crm")
        # Until the import's INSERT of ann's address waits for the signup's row.
        wait_until_blocked(engine, first_pid, importing, "the import never waited for the signup")
        first.commit()
        first.close()
        report = importing.result(timeout=60)
    assert (report.created, report.consent) == (2, {"marketing:changed": 2})
    with session_scope(pg_factory) as session:
        found = session.execute(
            select(Address.address, ConsentState.status, Consent.source)
            .join(ConsentState, ConsentState.address_id == Address.id)
            .join(Consent, Consent.id == ConsentState.consent_id)
            .order_by(Address.address)
        ).all()
        assert [tuple(row) for row in found] == [
            ("ann@example.com", "opted_out", "crm"),
            ("bob@example.com", "opted_in", "crm"),
        ]
        assert session.scalar(select(func.count()).select_from(Consent)) == 3
        events = session.execute(
            select(Address.address, Event.outcome)
            .join(Address, Address.id == Event.address_id)
            .where(Event.kind == "consent_changed", Event.detail["source"].as_string() == "crm")
            .order_by(Address.address)
        ).all()
        assert [tuple(row) for row in events] == [
            ("ann@example.com", "opted_out"),
            ("bob@example.com", "opted_in"),
        ]
