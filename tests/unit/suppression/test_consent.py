from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from suppression.consent import ConsentOutcome, consent_history, current_consent, record_consent
from suppression.models import ConsentState, ConsentStatus, Event, Scope
from suppression.registry import ensure_address
from tests.factories import T0

IN, OUT = ConsentStatus.OPTED_IN, ConsentStatus.OPTED_OUT


def record(session: Session, address_id: int, status: ConsentStatus, at=T0, **kw) -> str:
    return record_consent(
        session, address_id, Scope.MARKETING, status, source="test", occurred_at=at, **kw
    )


def test_latest_row_decides_and_history_is_kept(session: Session) -> None:
    a = ensure_address(session, "a@example.com")
    assert record(session, a, IN) == ConsentOutcome.RECORDED
    assert record(session, a, OUT, T0 + timedelta(days=1)) == ConsentOutcome.RECORDED
    state = current_consent(session, a, Scope.MARKETING)
    assert state is not None and state.status == OUT
    assert [c.status for c in consent_history(session, a)] == [IN, OUT]


def test_repeating_the_current_status_adds_nothing(session: Session) -> None:
    a = ensure_address(session, "a@example.com")
    record(session, a, IN)
    assert record(session, a, IN, T0 + timedelta(days=2)) == ConsentOutcome.UNCHANGED
    assert len(consent_history(session, a)) == 1


def test_only_the_recipient_can_turn_an_opt_out_into_an_opt_in(session: Session) -> None:
    a = ensure_address(session, "a@example.com")
    record(session, a, OUT)
    later = T0 + timedelta(days=3)
    assert record(session, a, IN, later) == ConsentOutcome.KEPT_OPT_OUT
    assert current_consent(session, a, Scope.MARKETING).status == OUT
    assert record(session, a, IN, later, recipient_action=True) == ConsentOutcome.RECORDED
    assert current_consent(session, a, Scope.MARKETING).status == IN


def test_an_older_change_does_not_override_a_newer_one(session: Session) -> None:
    a = ensure_address(session, "a@example.com")
    record(session, a, IN, T0 + timedelta(days=5))
    assert record(session, a, OUT, T0) == ConsentOutcome.STALE
    assert current_consent(session, a, Scope.MARKETING).status == IN


def test_scopes_are_independent(session: Session) -> None:
    a = ensure_address(session, "a@example.com")
    record(session, a, IN)
    assert current_consent(session, a, Scope.AFFILIATES) is None


def consent_events(session: Session, address_id: int) -> int:
    return session.scalar(
        select(func.count()).where(Event.address_id == address_id, Event.kind == "consent_changed")
    )


def test_a_refused_opt_in_leaves_no_trace(session: Session) -> None:
    """Staff or an import cannot opt a recipient back in: no ledger row, no event."""
    a = ensure_address(session, "a@example.com")
    record(session, a, OUT)
    assert record(session, a, IN, T0 + timedelta(days=3)) == ConsentOutcome.KEPT_OPT_OUT
    assert [c.status for c in consent_history(session, a)] == [OUT]
    assert consent_events(session, a) == 1


def test_an_older_change_is_kept_as_history_without_an_event(session: Session) -> None:
    """A change older than the state goes into the ledger, even one of the state's own
    status, but moves nothing: no ``consent_changed`` event."""
    a = ensure_address(session, "a@example.com")
    record(session, a, OUT, T0 + timedelta(days=5))
    assert record(session, a, IN, T0) == ConsentOutcome.STALE
    assert record(session, a, OUT, T0 + timedelta(days=1)) == ConsentOutcome.STALE
    assert [(c.status, c.occurred_at) for c in consent_history(session, a)] == [
        (IN, T0),
        (OUT, T0 + timedelta(days=1)),
        (OUT, T0 + timedelta(days=5)),
    ]
    assert current_consent(session, a, Scope.MARKETING).occurred_at == T0 + timedelta(days=5)
    assert consent_events(session, a) == 1


def test_a_change_is_judged_against_its_own_scopes_state(session: Session) -> None:
    a = ensure_address(session, "a@example.com")
    record_consent(session, a, Scope.AFFILIATES, OUT, source="test", occurred_at=T0)
    record(session, a, IN)
    assert record(session, a, OUT, T0 + timedelta(days=1)) == ConsentOutcome.RECORDED
    assert record(session, a, IN, T0 + timedelta(days=2), recipient_action=True) == (
        ConsentOutcome.RECORDED
    )
    assert current_consent(session, a, Scope.MARKETING).status == IN
    assert current_consent(session, a, Scope.AFFILIATES).status == OUT


def test_an_opt_out_at_the_same_moment_as_the_opt_in_wins(session: Session) -> None:
    a = ensure_address(session, "a@example.com")
    record(session, a, IN)
    assert record(session, a, OUT) == ConsentOutcome.RECORDED
    assert current_consent(session, a, Scope.MARKETING).status == OUT


def test_an_undated_opt_in_gives_way_to_any_dated_change(session: Session) -> None:
    """An opt-in without a date (an import's, stamped with the import's time) is older than
    every dated word: a dated opt-out from before the import's time still moves the state."""
    a = ensure_address(session, "a@example.com")
    record(session, a, IN, T0 + timedelta(days=10))
    session.execute(update(ConsentState).where(ConsentState.address_id == a).values(dated=False))
    assert record(session, a, OUT, T0) == ConsentOutcome.RECORDED
    assert current_consent(session, a, Scope.MARKETING).status == OUT


def test_history_is_in_the_order_things_happened_not_the_order_they_were_recorded(
    session: Session,
) -> None:
    a = ensure_address(session, "a@example.com")
    record(session, a, OUT, T0 + timedelta(days=2))
    assert record(session, a, IN, T0) == ConsentOutcome.STALE  # an older opt-in, told later
    state = current_consent(session, a, Scope.MARKETING)
    assert state is not None and state.status == OUT
    assert [(c.status, c.occurred_at) for c in consent_history(session, a)] == [
        (IN, T0),
        (OUT, T0 + timedelta(days=2)),
    ]


def test_a_recorded_change_names_who_and_how_and_refreshes_a_loaded_state(
    session: Session,
) -> None:
    from sqlalchemy import select

    from suppression.events import Hit
    from suppression.models import Event

    a = ensure_address(session, "a@example.com")
    record(session, a, IN)
    loaded = current_consent(session, a, Scope.MARKETING)  # now in the session's identity map
    assert loaded is not None and loaded.status == IN
    hit = Hit(ip="10.0.0.7", user_agent="browser")
    outcome = record(session, a, OUT, T0 + timedelta(days=1), actor="staff:bo", hit=hit)
    assert outcome == ConsentOutcome.RECORDED
    assert loaded.status == OUT  # the loaded object is not left stale
    latest = consent_history(session, a)[-1]
    assert (latest.actor, latest.ip, latest.dated) == ("staff:bo", "10.0.0.7", True)
    event = session.scalars(
        select(Event).where(Event.kind == "consent_changed").order_by(Event.id.desc())
    ).first()
    assert event is not None
    assert (event.address_id, event.actor, event.ip, event.outcome) == (
        a,
        "staff:bo",
        "10.0.0.7",
        "opted_out",
    )
    assert (event.detail["scope"], event.detail["source"]) == ("marketing", "test")
