"""The suppression list: the one place where an address's sendability changes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from suppression.events import Hit, bound_event, bound_event_params, insert_events, record_event
from suppression.models import GLOBAL_SCOPE, Address, Reason, Scope, Suppression, utcnow
from suppression.sql import built_once, core, dialect_name, inline_constants, insert_on, run_one

# Suppressions a recipient may lift by re-subscribing. Everything else needs staff.
RECIPIENT_LIFTABLE = frozenset({Reason.UNSUBSCRIBE})
# Nobody lifts these, and staff cannot add them by hand: ``suppression.erasure`` owns them.
PERMANENT = frozenset({Reason.ERASED})


class SuppressionError(ValueError):
    """A staff request about the suppression list that cannot be carried out, and why."""


@dataclass(frozen=True)
class Added:
    suppression_id: int
    created: bool


def valid_scope(scope: str) -> str:
    allowed = {GLOBAL_SCOPE, *(str(s) for s in Scope)}
    if scope in allowed or (scope.startswith("affiliate:") and scope[10:].isdigit()):
        return scope
    raise SuppressionError(
        f"unknown scope {scope!r}: use one of {', '.join(sorted(allowed))} or affiliate:<id>"
    )


def valid_reason(reason: str) -> Reason:
    """A reason staff may give by hand (``erased`` is only ever set by an erasure)."""
    names = ", ".join(r.value for r in Reason if r not in PERMANENT)
    try:
        parsed = Reason(reason)
    except ValueError:
        raise SuppressionError(f"unknown reason {reason!r}: use one of {names}") from None
    if parsed in PERMANENT:
        raise SuppressionError(
            f"reason {reason!r} is set only by `dispatcher person erase`: use one of {names}"
        )
    return parsed


def add_suppression(
    session: Session,
    address_id: int,
    *,
    scope: str,
    reason: Reason,
    source: str,
    note: str | None = None,
    actor: str | None = None,
    hit: Hit | None = None,
) -> Added:
    """Suppress ``address_id`` for ``scope`` (idempotent per active scope and reason)."""
    scope = valid_scope(scope)
    insert, existing_id = _add_statements(dialect_name(session))
    row = {"address_id": address_id, "scope": scope, "reason": str(reason)}
    keys = {f"p_{k}": v for k, v in row.items()}
    values = {"source": source, "note": note, "created_by": actor, "created_at": utcnow()}
    # The ``suppression_added`` event's fields (written only when a row was added).
    event: dict[str, Any] = {
        "address_id": address_id,
        "actor": actor,
        "hit": hit,
        "outcome": str(reason),
        "scope": scope,
        "source": source,
    }
    connection = core(session)
    if connection.dialect.name == "postgresql":
        # One round trip: the INSERT, its event (written only when a row was added) and the
        # active row it met otherwise.
        new_id, existing = run_one(
            connection,
            _add_in_one(),
            {
                **keys,
                **{f"p_{k}": v for k, v in values.items()},
                **bound_event_params("e", "suppression_added", **event),
            },
        )
        if new_id is not None:
            return Added(new_id, created=True)
        if existing is None:
            # The row we met was committed by another transaction after this statement's
            # snapshot (two clicks at once): read it again with a new snapshot.
            existing = connection.scalar(existing_id, keys)
        assert existing is not None
        return Added(existing, created=False)
    new_id = connection.execute(insert, {**row, **values}).scalar_one_or_none()
    if new_id is None:
        existing = connection.scalar(existing_id, keys)
        assert existing is not None
        return Added(existing, created=False)
    record_event(session, "suppression_added", **event)
    return Added(new_id, created=True)


def _add_statements(dialect: str) -> tuple[Any, Any]:
    """The idempotent INSERT (its values bound per call) and the look-up of the active row it
    met, built once per backend (a statement costs more to build than to run)."""
    insert = (
        insert_on(dialect, Suppression)
        .on_conflict_do_nothing(
            index_elements=["address_id", "scope", "reason"],
            index_where=Suppression.lifted_at.is_(None),
        )
        .returning(Suppression.id)
    )
    existing = select(Suppression.id).where(
        Suppression.address_id == bindparam("p_address_id"),
        Suppression.scope == bindparam("p_scope"),
        Suppression.reason == bindparam("p_reason"),
        Suppression.lifted_at.is_(None),
    )
    return inline_constants(insert), inline_constants(existing)


_add_statements = built_once(_add_statements)


def _add_in_one() -> Any:
    """PostgreSQL: :func:`_add_statements` and the ``suppression_added`` event as one
    statement. Returns (the new row's id or NULL, the active row met or NULL)."""
    insert, existing = _add_statements("postgresql")
    columns = ("address_id", "scope", "reason", "source", "note", "created_by", "created_at")
    added = insert.values(
        {c: bindparam(f"p_{c}", type_=Suppression.__table__.c[c].type) for c in columns}
    ).cte("added")
    event = insert_events(bound_event("e").select_from(added)).cte("added_event")
    return inline_constants(
        select(
            select(added.c.id).scalar_subquery().label("new_id"),
            existing.scalar_subquery().label("existing_id"),
        ).add_cte(event)
    )


_add_in_one = built_once(_add_in_one)


def active_suppressions(session: Session, address_id: int) -> list[Suppression]:
    stmt = (
        select(Suppression)
        .where(Suppression.address_id == address_id, Suppression.lifted_at.is_(None))
        .order_by(Suppression.id)
    )
    return list(session.scalars(stmt))


def lift_suppressions(
    session: Session,
    address_id: int,
    *,
    why: str,
    actor: str,
    reasons: Iterable[Reason] | None = None,
    scopes: Iterable[str] | None = None,
    hit: Hit | None = None,
) -> int:
    """Lift active suppressions of ``address_id`` (of ``reasons`` and ``scopes``, or all);
    returns how many.

    Staff must say why; the rows stay, marked lifted, and an event records it.
    """
    if not why or not why.strip():
        raise SuppressionError("say why the suppression is lifted (--reason)")
    stmt = (
        update(Suppression)
        .where(
            Suppression.address_id == address_id,
            Suppression.lifted_at.is_(None),
            Suppression.reason.not_in([str(r) for r in PERMANENT]),
        )
        .values(lifted_at=utcnow(), lifted_by=actor, lift_reason=why.strip())
    )
    if reasons is not None:
        stmt = stmt.where(Suppression.reason.in_([str(r) for r in reasons]))
    if scopes is not None:
        stmt = stmt.where(Suppression.scope.in_([str(s) for s in scopes]))
    count = session.execute(stmt).rowcount or 0  # type: ignore[attr-defined]
    if count:
        record_event(
            session,
            "suppression_lifted",
            address_id=address_id,
            actor=actor,
            hit=hit,
            outcome="lifted",
            count=count,
            why=why.strip(),
        )
    return count


def list_suppressions(session: Session, *, include_lifted: bool) -> list[tuple[str, Suppression]]:
    stmt = select(Address.address, Suppression).join(Address, Address.id == Suppression.address_id)
    if not include_lifted:
        stmt = stmt.where(Suppression.lifted_at.is_(None))
    return [(addr, sup) for addr, sup in session.execute(stmt.order_by(Suppression.id))]


def page_suppressions(
    session: Session,
    *,
    reason: str | None = None,
    scope: str | None = None,
    include_lifted: bool = False,
    before_id: int | None = None,
    limit: int,
) -> tuple[list[tuple[str, Suppression]], int | None]:
    """One page of suppressions, newest first, and the id to ask for the next page with
    (None on the last). Keyset paging (``id < before_id``), so page 1,000 costs what page 1
    does; a reason or scope filter walks ``ix_suppressions_reason_id`` / ``…_scope_id``."""
    stmt = select(Address.address, Suppression).join(Address, Address.id == Suppression.address_id)
    if reason:
        stmt = stmt.where(Suppression.reason == reason)
    if scope:
        stmt = stmt.where(Suppression.scope == scope)
    if not include_lifted:
        stmt = stmt.where(Suppression.lifted_at.is_(None))
    if before_id is not None:
        stmt = stmt.where(Suppression.id < before_id)
    rows = [
        (a, s) for a, s in session.execute(stmt.order_by(Suppression.id.desc()).limit(limit + 1))
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1][1].id if more and rows else None)
