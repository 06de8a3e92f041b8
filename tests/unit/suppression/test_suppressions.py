from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from suppression.models import Reason
from suppression.registry import ensure_address
from suppression.suppressions import (
    SuppressionError,
    add_suppression,
    lift_suppressions,
    list_suppressions,
    page_suppressions,
    valid_reason,
)


def _suppress(session: Session, address: str, reason: Reason, scope: str = "global") -> int:
    address_id = ensure_address(session, address)
    return add_suppression(
        session, address_id, scope=scope, reason=reason, source="test"
    ).suppression_id


def test_pages_walk_newest_first_by_id_and_filters_narrow_them(session: Session) -> None:
    ids = [_suppress(session, f"p{i}@example.com", Reason.MANUAL) for i in range(5)]
    bounced = _suppress(session, "b@example.com", Reason.HARD_BOUNCE, scope="marketing")
    lifted = _suppress(session, "l@example.com", Reason.MANUAL)
    lift_suppressions(session, ensure_address(session, "l@example.com"), why="test", actor="t")
    session.flush()

    def walk(**filters: object) -> list[list[int]]:
        pages, before = [], None
        while True:
            rows, before = page_suppressions(session, before_id=before, limit=2, **filters)  # type: ignore[arg-type]
            pages.append([s.id for _, s in rows])
            if before is None:
                return pages

    newest_first = [bounced, *reversed(ids)]
    assert walk() == [newest_first[0:2], newest_first[2:4], newest_first[4:6]]
    assert walk(include_lifted=True)[0] == [lifted, bounced]
    assert walk(reason="manual") == [ids[:2:-1][:2], ids[2:0:-1], [ids[0]]]
    assert walk(scope="marketing") == [[bounced]]
    rows, before = page_suppressions(session, limit=100)
    assert before is None and len(rows) == 6
    assert rows[0][0] == "b@example.com" and rows[0][1].reason == "hard_bounce"
    assert page_suppressions(session, limit=6)[1] is None
    assert page_suppressions(session, limit=5)[1] == ids[1]


def test_the_full_list_is_oldest_first_with_lifted_rows_only_when_asked(session: Session) -> None:
    first = _suppress(session, "a@example.com", Reason.MANUAL)
    lifted = _suppress(session, "l@example.com", Reason.COMPLAINT)
    lift_suppressions(session, ensure_address(session, "l@example.com"), why="test", actor="t")
    last = _suppress(session, "z@example.com", Reason.LEGAL, scope="marketing")
    session.flush()
    assert [(a, s.id) for a, s in list_suppressions(session, include_lifted=False)] == [
        ("a@example.com", first),
        ("z@example.com", last),
    ]
    assert [s.id for _, s in list_suppressions(session, include_lifted=True)] == [
        first,
        lifted,
        last,
    ]


def test_an_unknown_or_reserved_reason_is_refused_with_the_reasons_staff_may_give() -> None:
    allowed = (
        "unsubscribe, hard_bounce, repeated_soft_bounce, complaint, manual, postal_request, legal"
    )
    assert valid_reason("legal") is Reason.LEGAL
    with pytest.raises(SuppressionError) as unknown:
        valid_reason("nope")
    assert str(unknown.value) == f"unknown reason 'nope': use one of {allowed}"
    with pytest.raises(SuppressionError) as reserved:
        valid_reason("erased")
    assert str(reserved.value) == (
        f"reason 'erased' is set only by `dispatcher person erase`: use one of {allowed}"
    )


def test_a_lift_is_recorded_once_with_who_why_and_from_where(session: Session) -> None:
    from sqlalchemy import select

    from suppression.events import Hit
    from suppression.models import Event, Suppression

    address_id = ensure_address(session, "a@example.com")
    first = _suppress(session, "a@example.com", Reason.MANUAL)
    with pytest.raises(SuppressionError, match=r"^say why the suppression is lifted \(--reason\)$"):
        lift_suppressions(session, address_id, why="  ", actor="staff")
    hit = Hit(ip="10.0.0.9", user_agent="console")
    assert lift_suppressions(session, address_id, why=" asked by phone ", actor="ann", hit=hit) == 1
    again = _suppress(session, "a@example.com", Reason.MANUAL)
    assert lift_suppressions(session, address_id, why="second", actor="bob") == 1
    rows = {s.id: s for s in session.scalars(select(Suppression))}
    # The first lift's record is kept: a later lift touches only rows still active.
    assert (rows[first].lifted_by, rows[first].lift_reason) == ("ann", "asked by phone")
    assert (rows[again].lifted_by, rows[again].lift_reason) == ("bob", "second")
    events = session.scalars(
        select(Event).where(Event.kind == "suppression_lifted").order_by(Event.id)
    ).all()
    assert [(e.address_id, e.actor, e.ip, e.outcome) for e in events] == [
        (address_id, "ann", "10.0.0.9", "lifted"),
        (address_id, "bob", None, "lifted"),
    ]
    assert (events[0].detail["count"], events[0].detail["why"]) == (1, "asked by phone")


def test_adding_an_active_suppression_again_returns_it_and_records_one_event(
    session: Session,
) -> None:
    from sqlalchemy import select

    from suppression.events import Hit
    from suppression.models import Event

    address_id = ensure_address(session, "a@example.com")
    hit = Hit(ip="10.0.0.8", user_agent="console")
    first = add_suppression(
        session,
        address_id,
        scope="marketing",
        reason=Reason.COMPLAINT,
        source="fbl",
        actor="t",
        hit=hit,
    )
    again = add_suppression(
        session, address_id, scope="marketing", reason=Reason.COMPLAINT, source="fbl", actor="t"
    )
    assert (first.created, again.created, again.suppression_id) == (
        True,
        False,
        first.suppression_id,
    )
    events = session.scalars(select(Event).where(Event.kind == "suppression_added")).all()
    assert [(e.address_id, e.actor, e.ip, e.outcome) for e in events] == [
        (address_id, "t", "10.0.0.8", "complaint")
    ]
    assert (events[0].detail["scope"], events[0].detail["source"]) == ("marketing", "fbl")


def test_adding_a_suppression_again_returns_its_own_row_not_one_like_it(session: Session) -> None:
    """The row met is the address's active one of that scope and reason: not another
    address's, another scope's or reason's, nor a lifted one (all older here)."""
    address_id = ensure_address(session, "a@example.com")
    _suppress(session, "b@example.com", Reason.UNSUBSCRIBE, scope="marketing")
    _suppress(session, "a@example.com", Reason.UNSUBSCRIBE, scope="marketing")
    assert lift_suppressions(session, address_id, why="asked", actor="ann") == 1
    _suppress(session, "a@example.com", Reason.UNSUBSCRIBE, scope="global")
    _suppress(session, "a@example.com", Reason.COMPLAINT, scope="marketing")
    active = _suppress(session, "a@example.com", Reason.UNSUBSCRIBE, scope="marketing")
    again = add_suppression(
        session, address_id, scope="marketing", reason=Reason.UNSUBSCRIBE, source="test"
    )
    assert (again.created, again.suppression_id) == (False, active)


@pytest.mark.parametrize("scope", ["affiliate:abc", "affiliates:12", "marketingx123"])
def test_an_unknown_scope_is_refused_with_the_scopes_there_are(scope: str) -> None:
    from suppression.suppressions import valid_scope

    assert valid_scope("affiliate:12") == "affiliate:12"
    with pytest.raises(SuppressionError) as caught:
        valid_scope(scope)
    assert str(caught.value) == (
        f"unknown scope {scope!r}: use one of affiliates, global, marketing or affiliate:<id>"
    )
