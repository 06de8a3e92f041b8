from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from suppression.consent import ConsentOutcome, consent_history, current_consent, record_consent
from suppression.models import ConsentStatus, Scope
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


def test_history_is_in_the_order_things_happened_not_the_order_they_were_recorded(
    session: Session,
) -> None:
    a = ensure_address(session, "a@example.com")
    record(session, a, OUT, T0 + timedelta(days=2))
    record(session, a, IN, T0)  # an older opt-in, imported later
    assert [(c.status, c.occurred_at) for c in consent_history(session, a)] == [
        (IN, T0),
        (OUT, T0 + timedelta(days=2)),
    ]
