"""An import keeps the latest word on consent: in one file, across files, in any order."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.contacts import importer
from dispatcher.contacts.importer import import_contacts
from dispatcher.db import session_scope
from suppression.models import Address, Consent, ConsentState, Event
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


def _ledger_size(session_factory: sessionmaker[Session]) -> int:
    with session_scope(session_factory) as session:
        return len(session.scalars(select(Consent.id)).all())


def test_an_opt_in_refused_once_stays_refused_when_a_later_opt_out_arrives(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """Importing the same files again writes nothing, even after the refused opt-in's time was
    overtaken by an opt-out (the file's own undated one, or a later file's dated one).

    The defect: the opt-in was refused against the opt-out of the day, then judged again
    against the later opt-out and written as history by the re-import."""
    first = write(tmp_path, "ann@example.com,no,no,2015-01-01\n", "first.csv")
    second = write(
        tmp_path,
        "ann@example.com,yes,,2015-01-02\nann@example.com,,no,\nann@example.com,,yes,2015-01-02\n",
        "second.csv",
    )
    third = write(tmp_path, "ann@example.com,no,,2015-01-03\n", "third.csv")
    for path in (first, second, third):
        import_contacts(session_factory, path, source="test")
    size = _ledger_size(session_factory)
    for path in (first, second, third):
        report = import_contacts(session_factory, path, source="test")
        assert set(report.consent) <= {
            "marketing:known",
            "affiliates:known",
            "marketing:refused",
            "affiliates:refused",
        }, path.name
    assert _ledger_size(session_factory) == size
    again = import_contacts(session_factory, second, source="test")
    assert again.consent == {"marketing:refused": 1, "affiliates:refused": 1, "affiliates:known": 1}
    assert [(r.line, r.field) for r in again.refused] == [
        (2, "marketing_consent"),
        (4, "affiliates_consent"),
    ]
    assert states(session_factory) == {
        ("ann@example.com", "marketing"): "opted_out",
        ("ann@example.com", "affiliates"): "opted_out",
    }


def test_one_row_and_several_row_addresses_mixed_in_a_file_over_an_existing_ledger(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """Facts alone in the file for their address and scope take a shorter path through the
    merge than an address's several facts: both land in one ledger, with distinct ids counting
    on from the rows already there, an address's rows in line order, every state pointing at
    a ledger row of its own word and one event per state written."""
    first = write(tmp_path, "bob@example.com,yes,,2015-01-01\n", "a.csv")
    import_contacts(session_factory, first, source="test")
    first_id = max(_ledger_ids(session_factory))
    path = write(
        tmp_path,
        "ann@example.com,yes,no,2015-01-01\n"  # line 2: ann's opt-in, history by line 5
        "bob@example.com,no,,2016-01-01\n"  # alone: a later word over bob's state
        "cat@example.com,,yes,2015-01-01\n"  # alone: a new address
        "ann@example.com,no,,2015-01-01\n",  # same time as line 2: the opt-out wins
        "b.csv",
    )
    report = import_contacts(session_factory, path, source="test")
    assert report.consent == {
        "marketing:changed": 2,
        "marketing:history": 1,
        "affiliates:changed": 2,
    }
    assert states(session_factory) == {
        ("ann@example.com", "marketing"): "opted_out",
        ("ann@example.com", "affiliates"): "opted_out",
        ("bob@example.com", "marketing"): "opted_out",
        ("cat@example.com", "affiliates"): "opted_in",
    }
    with session_scope(session_factory) as session:
        ledger = session.execute(
            select(Consent.id, Address.address, Consent.scope, Consent.status)
            .join(Address, Address.id == Consent.address_id)
            .where(Consent.id > first_id)
        ).all()
        assert len(ledger) == 5 and len({row.id for row in ledger}) == 5
        ann_marketing = sorted(
            (row.id, row.status)
            for row in ledger
            if (row.address, row.scope) == ("ann@example.com", "marketing")
        )
        assert [status for _, status in ann_marketing] == ["opted_in", "opted_out"]  # lines
        for state in session.scalars(select(ConsentState)):
            word = session.get(Consent, state.consent_id)
            assert word is not None
            assert (word.address_id, word.scope, word.status) == (
                state.address_id,
                state.scope,
                state.status,
            )
        events = session.scalars(select(Event).where(Event.kind == "consent_changed")).all()
        assert len(events) == 1 + 4  # the first file's, then one per state written
    again = import_contacts(session_factory, path, source="test")
    assert set(again.consent) == {"marketing:known", "affiliates:known"}
    assert max(_ledger_ids(session_factory)) == max(row.id for row in ledger)


def _ledger_ids(session_factory: sessionmaker[Session]) -> list[int]:
    with session_scope(session_factory) as session:
        return list(session.scalars(select(Consent.id)))


def test_an_older_opt_in_is_judged_by_the_word_before_it_of_its_own_address_and_scope(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """Ann's older opt-in follows her own marketing opt-in, so it is history; the opt-outs
    just before it in time belong to Bob, and to Ann's affiliates consent, and change nothing."""
    first = write(
        tmp_path,
        "ann@example.com,yes,,2015-01-01\n"
        "ann@example.com,,no,2015-06-01\n"
        "bob@example.com,no,,2015-06-01\n",
        "first.csv",
    )
    later = write(tmp_path, "ann@example.com,yes,,2016-01-01\n", "later.csv")
    older = write(tmp_path, "ann@example.com,yes,,2015-09-01\n", "older.csv")
    for path in (first, later):
        import_contacts(session_factory, path, source="test")
    report = import_contacts(session_factory, older, source="test")
    assert report.consent == {"marketing:history": 1}


def test_an_older_opt_in_after_a_tie_that_the_opt_out_won_is_refused(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """At equal times the opt-out is the later word, in the ledger too: an import's opt-in
    that comes after such a tie (and before the person's own later opt-in) is refused."""
    from datetime import UTC, datetime

    from suppression.consent import record_consent
    from suppression.models import ConsentStatus, Scope
    from suppression.registry import ensure_address

    tie = write(tmp_path, "ann@example.com,yes,,2015-01-01\nann@example.com,no,,2015-01-01\n")
    import_contacts(session_factory, tie, source="test")
    with session_scope(session_factory) as session:
        record_consent(
            session,
            ensure_address(session, "ann@example.com"),
            Scope.MARKETING,
            ConsentStatus.OPTED_IN,
            source="preferences",
            occurred_at=datetime(2016, 1, 1, tzinfo=UTC),
            recipient_action=True,
        )
    older = write(tmp_path, "ann@example.com,yes,,2015-06-01\n", "older.csv")
    assert import_contacts(session_factory, older, source="test").consent == {
        "marketing:refused": 1
    }


def test_each_state_an_import_writes_gets_one_event_naming_the_address_actor_and_source(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    path = write(tmp_path, "ann@example.com,yes,no,2015-01-01\nbob@example.com,no,,2015-01-01\n")
    import_contacts(session_factory, path, source="crm-export", actor="staff:ann")
    with session_scope(session_factory) as session:
        found = session.execute(
            select(Address.address, Event.actor, Event.outcome, Event.detail)
            .join(Address, Address.id == Event.address_id)
            .where(Event.kind == "consent_changed")
        ).all()
    assert sorted((a, actor, outcome, dict(detail)) for a, actor, outcome, detail in found) == [
        (
            "ann@example.com",
            "staff:ann",
            "opted_in",
            {"scope": "marketing", "source": "crm-export"},
        ),
        (
            "ann@example.com",
            "staff:ann",
            "opted_out",
            {"scope": "affiliates", "source": "crm-export"},
        ),
        (
            "bob@example.com",
            "staff:ann",
            "opted_out",
            {"scope": "marketing", "source": "crm-export"},
        ),
    ]


def test_a_repeated_line_is_known_and_a_later_same_word_renews_the_state(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    first = write(tmp_path, "ann@example.com,yes,,2015-01-01\nann@example.com,yes,,2015-01-01\n")
    assert import_contacts(session_factory, first, source="test").consent == {
        "marketing:changed": 1,
        "marketing:known": 1,
    }
    later = write(tmp_path, "ann@example.com,yes,,2016-01-01\n", "later.csv")
    assert import_contacts(session_factory, later, source="test").consent == {
        "marketing:renewed": 1
    }


def test_an_opt_in_without_a_time_loses_to_any_opt_out_recorded_later(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """Even one dated before the moment the undated opt-in was learned."""
    from datetime import UTC, datetime

    from suppression.consent import ConsentOutcome, record_consent
    from suppression.models import ConsentStatus, Scope
    from suppression.registry import ensure_address

    import_contacts(session_factory, write(tmp_path, "ann@example.com,yes,,\n"), source="test")
    with session_scope(session_factory) as session:
        outcome = record_consent(
            session,
            ensure_address(session, "ann@example.com"),
            Scope.MARKETING,
            ConsentStatus.OPTED_OUT,
            source="staff",
            occurred_at=datetime(2015, 1, 1, tzinfo=UTC),
        )
    assert outcome == ConsentOutcome.RECORDED
    assert states(session_factory)[("ann@example.com", "marketing")] == "opted_out"


def test_an_undated_opt_in_learned_long_ago_is_not_the_word_before_a_dated_opt_in(
    tmp_path: Path, session_factory: sessionmaker[Session], monkeypatch
) -> None:
    """The ledger orders an undated opt-in below every dated word, whenever it was learned:
    the word before a 2022 opt-in is the 2019 opt-out, not the opt-in learned in 2020."""
    from datetime import UTC, datetime

    from dispatcher.contacts import importer
    from suppression.consent import record_consent
    from suppression.models import ConsentStatus, Scope
    from suppression.registry import ensure_address

    opt_out = write(tmp_path, "ann@example.com,no,,2019-01-01\n", "2019.csv")
    import_contacts(session_factory, opt_out, source="test")
    monkeypatch.setattr(importer, "utcnow", lambda: datetime(2020, 1, 1, tzinfo=UTC))
    undated = write(tmp_path, "ann@example.com,yes,,\n", "undated.csv")
    import_contacts(session_factory, undated, source="test")  # learned on 1 January 2020
    monkeypatch.undo()
    with session_scope(session_factory) as session:
        record_consent(  # the person's own opt-in makes the state
            session,
            ensure_address(session, "ann@example.com"),
            Scope.MARKETING,
            ConsentStatus.OPTED_IN,
            source="preferences",
            occurred_at=datetime(2023, 1, 1, tzinfo=UTC),
            recipient_action=True,
        )
    older = write(tmp_path, "ann@example.com,yes,,2022-01-01\n", "2022.csv")
    assert import_contacts(session_factory, older, source="test").consent == {
        "marketing:refused": 1
    }


def test_a_later_opt_out_beats_an_opt_in_dated_before_the_year_1000(
    tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """Red team: on SQLite the import wrote times with strftime('%Y'), which does not pad
    years before 1000, and the rule compares the stored text: '999-…' > '2025-…', so a typo'd
    year (0999 for 1999) outranked every real date. Such a time is now a row error."""
    first = import_contacts(
        session_factory, write(tmp_path, "ann@example.com,yes,,0999-06-01\n"), source="t"
    )
    assert [(e.line, e.field) for e in first.errors] == [(2, "consent_at")]
    report = import_contacts(
        session_factory, write(tmp_path, "ann@example.com,no,,2025-01-01\n", "b.csv"), source="t"
    )
    assert report.consent == {"marketing:changed": 1}, report.consent
    assert states(session_factory)[("ann@example.com", "marketing")] == "opted_out"


def test_times_before_the_year_1000_are_stored_so_that_they_sort_first(
    tmp_path: Path, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should such a time come in (the importer refuses it today), it is stored with a
    four-digit year, so the stored text sorts as the time does and the later opt-out wins."""
    monkeypatch.setattr(importer, "EARLIEST_CONSENT", datetime(1, 1, 1, tzinfo=UTC))
    importer._parse_time.cache_clear()
    try:
        import_contacts(
            session_factory, write(tmp_path, "ann@example.com,yes,,0999-06-01\n"), source="t"
        )
        assert states(session_factory)[("ann@example.com", "marketing")] == "opted_in"
        report = import_contacts(
            session_factory,
            write(tmp_path, "ann@example.com,no,,2025-01-01\n", "b.csv"),
            source="t",
        )
    finally:
        importer._parse_time.cache_clear()
    assert report.consent == {"marketing:changed": 1}, report.consent
    assert states(session_factory)[("ann@example.com", "marketing")] == "opted_out"
