"""The consent ledger: append-only history, and the one rule that decides which word is latest.

Every change of consent is a ledger row (``consents``); the current state per (address, scope)
is ``consent_states``, which the gate reads. Which fact becomes the current state is decided
here, once, as SQL: :func:`judge` compares a new fact with the current one, and
:func:`latest_first` orders facts from the latest word down. Both :func:`record_consent` (one
change, from a page or a staff tool) and :func:`merge_consents` (an import, set-based) use them.

The rule:

- the fact with the latest time decides; at equal times ``opted_out`` wins; an opt-in whose
  time is unknown (``dated`` false) loses to every opt-out. An opt-out without a time is
  recorded at the time we learn it, so it wins over everything known until then;
- a fact older than the current state is history: kept in the ledger, state unchanged;
- only the person (``recipient_action``) can turn an opt-out into an opt-in; an import or a
  staff tool that tries is refused and nothing is written. That holds in the past too: an
  opt-in whose nearest earlier word in the ledger is an opt-out is refused, even when a later
  opt-out has since become the state. So whether an opt-in is refused does not depend on what
  arrived after it, and importing the same files again writes nothing.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.orm import Session

from suppression.events import Hit, bound_event, bound_event_params, insert_events, record_event
from suppression.models import (
    BigId,
    Consent,
    ConsentState,
    ConsentStatus,
    Event,
    Scope,
    UTCDateTime,
    utcnow,
)
from suppression.sql import (
    built_once,
    core,
    dialect_name,
    inline_constants,
    insert_for,
    insert_on,
    run_one,
)

IN, OUT = str(ConsentStatus.OPTED_IN), str(ConsentStatus.OPTED_OUT)

REFUSED_REASON = (
    "an import cannot turn an opt-out into an opt-in (only the person can, on the preference page)"
)


class ConsentOutcome(enum.StrEnum):
    RECORDED = "recorded"
    UNCHANGED = "unchanged"
    KEPT_OPT_OUT = "kept_opt_out"
    STALE = "stale"


class Verdict(enum.StrEnum):
    """What became of one consent fact of an import."""

    CHANGED = "changed"  # became the current state, with another status (or the first one)
    RENEWED = "renewed"  # became the current state, same status, later time
    HISTORY = "history"  # written to the ledger; older than the latest word
    REFUSED = "refused"  # an opt-in over an opt-out: not written
    KNOWN = "known"  # the ledger already holds this fact (a re-import): nothing written


@dataclass(frozen=True)
class Fact:
    """Columns (or values) that describe one consent fact, for the SQL rule."""

    status: Any
    occurred_at: Any
    dated: Any


def _key(fact: Fact) -> tuple[ColumnElement[Any], ...]:
    """The order of the latest word: an undated opt-in first, then by time, opt-out on a tie."""
    tier = case((and_(fact.dated == false(), fact.status == IN), 0), else_=1)
    out_wins = case((fact.status == OUT, 1), else_=0)
    return (tier, fact.occurred_at, out_wins)


def latest_first(fact: Fact) -> list[ColumnElement[Any]]:
    """ORDER BY terms that put the latest word first."""
    return [term.desc() for term in _key(fact)]


def is_later(new: Fact, old: Fact) -> ColumnElement[bool]:
    return tuple_(*_key(new)) > tuple_(*_key(old))


def word_before(new: Fact, address_id: Any, scope: Any) -> ColumnElement[Any]:
    """SQL: the status of the ledger's latest word earlier than ``new`` (NULL if none)."""
    ledger = Fact(Consent.status, Consent.occurred_at, Consent.dated)
    return (
        select(Consent.status)
        .where(
            Consent.address_id == address_id,
            Consent.scope == scope,
            tuple_(*_key(ledger)) < tuple_(*_key(new)),
        )
        .order_by(*latest_first(ledger))
        .limit(1)
        .scalar_subquery()
    )


def judge(
    new: Fact,
    old: Fact,
    *,
    recipient_action: bool = False,
    earlier: ColumnElement[Any] | None = None,
) -> ColumnElement[str]:
    """SQL: ``history``, ``refused`` or ``candidate`` (may become the state) for ``new``
    against the current state ``old`` (whose columns are NULL when there is none).

    ``earlier`` is :func:`word_before` for ``new``: an opt-in older than the state is refused,
    not history, when the word just before it is an opt-out. Without it (a single change, which
    repeats nothing) an older opt-in is history."""
    later = is_later(new, old)
    whens: list[tuple[ColumnElement[bool], str]] = [(old.status.is_(None), "candidate")]
    if not recipient_action:
        whens.append((and_(new.status == IN, old.status == OUT, later), str(Verdict.REFUSED)))
        if earlier is not None:
            whens.append(
                (and_(new.status == IN, not_(later), earlier == OUT), str(Verdict.REFUSED))
            )
    whens.append((not_(later), str(Verdict.HISTORY)))
    return case(*whens, else_="candidate")


def _state_fact() -> Fact:
    return Fact(ConsentState.status, ConsentState.occurred_at, ConsentState.dated)


def _unless_overtaken(upsert: Any, *, recipient_action: bool) -> Any:
    """The state upsert, which the rule decides again in the database: a change that committed
    meanwhile (an unsubscribe racing an import) is never overwritten by an older word."""
    excluded = Fact(upsert.excluded.status, upsert.excluded.occurred_at, upsert.excluded.dated)
    return upsert.on_conflict_do_update(
        index_elements=[ConsentState.address_id, ConsentState.scope],
        set_={
            "status": upsert.excluded.status,
            "consent_id": upsert.excluded.consent_id,
            "occurred_at": upsert.excluded.occurred_at,
            "dated": upsert.excluded.dated,
        },
        where=judge(excluded, _state_fact(), recipient_action=recipient_action) == "candidate",
    )


def repeats_state(status: ConsentStatus, occurred_at: Any) -> ColumnElement[bool]:
    """SQL over ``consent_states``: true where :func:`record_consent` of ``status`` at
    ``occurred_at`` (not the recipient's own action) would change nothing, because it
    repeats the current state (the rule's ``candidate`` with the same status)."""
    new = Fact(literal(str(status)), occurred_at, literal(True))
    return and_(ConsentState.status == str(status), judge(new, _state_fact()) == "candidate")


def current_consent(session: Session, address_id: int, scope: Scope) -> ConsentState | None:
    return session.get(ConsentState, (address_id, str(scope)))


def record_consent(
    session: Session,
    address_id: int,
    scope: Scope,
    status: ConsentStatus,
    *,
    source: str,
    occurred_at: datetime,
    recipient_action: bool = False,
    actor: str | None = None,
    hit: Hit | None = None,
    policy_version: str | None = None,
) -> ConsentOutcome:
    """Record one change of consent and move the current state to it, when the rule says so.

    Repeating the current status adds nothing (a retried unsubscribe is not a new fact); an
    older change is kept as history; an opt-in over an opt-out is refused unless it is the
    recipient's own action (the preference page, a signed re-subscribe).
    """
    judged, ledger_insert, state_upsert = _record_statements(
        dialect_name(session), recipient_action
    )
    key = {"address_id": address_id, "scope": str(scope)}
    fact = {"status": str(status), "occurred_at": occurred_at}
    # The ``consent_changed`` event's fields (written only when the state moves).
    event: dict[str, Any] = {
        "address_id": address_id,
        "actor": actor,
        "hit": hit,
        "outcome": str(status),
        "scope": str(scope),
        "source": source,
    }
    connection = core(session)
    if connection.dialect.name == "postgresql":
        return _record_in_one(
            session,
            connection,
            key,
            fact,
            recipient_action=recipient_action,
            values={
                "source": source,
                "actor": actor,
                "ip": hit.ip if hit else None,
                "policy_version": policy_version,
                "recorded_at": utcnow(),
            },
            event=bound_event_params("e", "consent_changed", **event),
        )
    row = connection.execute(judged, {f"p_{k}": v for k, v in {**key, **fact}.items()}).first()
    verdict, current = (row[0], row[1]) if row is not None else ("candidate", None)
    if verdict == Verdict.REFUSED:
        return ConsentOutcome.KEPT_OPT_OUT
    if verdict == "candidate" and current == str(status):
        return ConsentOutcome.UNCHANGED
    ledger_id = connection.execute(
        ledger_insert,
        {
            **key,
            **fact,
            "dated": True,
            "source": source,
            "actor": actor,
            "ip": hit.ip if hit else None,
            "policy_version": policy_version,
            "recorded_at": utcnow(),
        },
    ).scalar_one()
    if verdict == Verdict.HISTORY:
        return ConsentOutcome.STALE
    connection.execute(state_upsert, {**key, **fact, "dated": True, "consent_id": ledger_id})
    _expire_state(session, address_id, str(scope))
    record_event(session, "consent_changed", **event)
    return ConsentOutcome.RECORDED


def _expire_state(session: Session, address_id: int, scope: str) -> None:
    """A state the session holds is stale once a Core statement has written it."""
    cached = session.identity_map.get(session.identity_key(ConsentState, (address_id, scope)))
    if cached is not None:
        session.expire(cached)


def _record_in_one(
    session: Session,
    connection: Any,
    key: dict[str, Any],
    fact: dict[str, Any],
    *,
    recipient_action: bool,
    values: dict[str, Any],
    event: dict[str, Any],
) -> ConsentOutcome:
    """PostgreSQL: :func:`record_consent` as one statement (the rule, the ledger row, the
    state and the event; see :func:`_record_in_one_statement`)."""
    params = {f"p_{k}": v for k, v in {**key, **fact, **values}.items()}
    verdict, current = run_one(
        connection, _record_in_one_statement(recipient_action), {**params, **event}
    )
    if verdict == Verdict.REFUSED:
        return ConsentOutcome.KEPT_OPT_OUT
    if verdict == "candidate" and current == fact["status"]:
        return ConsentOutcome.UNCHANGED
    if verdict == Verdict.HISTORY:
        return ConsentOutcome.STALE
    _expire_state(session, key["address_id"], key["scope"])
    return ConsentOutcome.RECORDED


def _record_in_one_statement(recipient_action: bool) -> Any:
    """PostgreSQL: the three statements of :func:`_record_statements` and the
    ``consent_changed`` event in one round trip, deciding as :func:`record_consent` does in
    Python: nothing is written when the rule refuses the change or it repeats the current
    status; the ledger row otherwise; the state (its upsert judges again, against the row as
    committed) and the event unless the change is history. Returns (verdict, current status).
    """
    consents = cast(Table, Consent.__table__)
    param = {c.name: bindparam(f"p_{c.name}", type_=c.type) for c in consents.c}
    # The new fact once, and the state under a short name: the SQL stays under psycopg's
    # 4 KB for statements it keeps parsed.
    given = select(param["status"].label("status"), param["occurred_at"].label("occurred_at")).cte(
        "given"
    )
    states = cast(Table, ConsentState.__table__).alias("s")
    rule = judge(
        Fact(given.c.status, given.c.occurred_at, literal(True)),
        Fact(states.c.status, states.c.occurred_at, states.c.dated),
        recipient_action=recipient_action,
    )
    found = (
        select(rule.label("verdict"), states.c.status)
        .select_from(given)
        .join(
            states,
            and_(states.c.address_id == param["address_id"], states.c.scope == param["scope"]),
        )
        .cte("judged")
    )
    verdict = func.coalesce(select(found.c.verdict).scalar_subquery(), "candidate")
    current = select(found.c.status).scalar_subquery()
    decided = select(verdict.label("verdict"), current.label("current")).cte("decided")
    repeats = and_(decided.c.verdict == "candidate", decided.c.current == given.c.status)
    writes = and_(decided.c.verdict != str(Verdict.REFUSED), not_(func.coalesce(repeats, False)))
    ledger_columns = [
        "address_id",
        "scope",
        "status",
        "occurred_at",
        "dated",
        "source",
        "actor",
        "ip",
        "policy_version",
        "recorded_at",
    ]
    fact = {"status": given.c.status, "occurred_at": given.c.occurred_at, "dated": literal(True)}
    ledger = (
        insert(consents)
        .from_select(
            ledger_columns,
            select(*(fact.get(c, param[c]) for c in ledger_columns))
            .select_from(given)
            .where(select(decided.c.verdict).where(writes).exists()),
        )
        .returning(consents.c.id)
        .cte("ledger")
    )
    becomes_state = decided.c.verdict != str(Verdict.HISTORY)
    upsert = postgresql_insert(cast(Table, ConsentState.__table__)).from_select(
        ["address_id", "scope", "status", "consent_id", "occurred_at", "dated"],
        select(
            param["address_id"],
            param["scope"],
            given.c.status,
            ledger.c.id,
            given.c.occurred_at,
            literal(True),
        )
        .select_from(ledger)
        .join(decided, becomes_state)
        .join(given, literal(True)),
    )
    state = _unless_overtaken(upsert, recipient_action=recipient_action).cte("state")
    changed = insert_events(bound_event("e").select_from(ledger).join(decided, becomes_state)).cte(
        "changed"
    )
    return inline_constants(select(decided.c.verdict, decided.c.current).add_cte(state, changed))


_record_in_one_statement = built_once(_record_in_one_statement)


def _record_statements(dialect: str, recipient_action: bool) -> tuple[Any, Any, Any]:
    """:func:`record_consent`'s three statements, built once per backend and kind of actor
    (building the rule's expression costs more than running it); values are bound per call."""
    status = bindparam("p_status", type_=String())
    occurred_at = bindparam("p_occurred_at", type_=UTCDateTime())
    new = Fact(status, occurred_at, literal(True))
    judged = select(
        judge(new, _state_fact(), recipient_action=recipient_action), ConsentState.status
    ).where(
        ConsentState.address_id == bindparam("p_address_id"),
        ConsentState.scope == bindparam("p_scope", type_=String()),
    )
    # The INSERTs take their values from each call's parameters.
    ledger = insert(cast(Table, Consent.__table__)).returning(Consent.__table__.c.id)
    upsert = insert_on(dialect, ConsentState.__table__)
    state = _unless_overtaken(upsert, recipient_action=recipient_action)
    return inline_constants(judged), ledger, inline_constants(state)


_record_statements = built_once(_record_statements)


@dataclass
class MergeTally:
    """How an import's consent facts fared: counts per ``scope:verdict`` and refused lines."""

    counts: Counter[str] = field(default_factory=Counter)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (line, scope)


_facts_meta = MetaData()
_FACTS = Table(
    "import_consent_facts",
    _facts_meta,
    Column("line", Integer, nullable=False),
    Column("address_id", BigId, nullable=False),
    Column("scope", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("dated", Boolean, nullable=False),
    Column("source", String(200), nullable=False),
    Column("fresh", Boolean, nullable=False),
    Column("verdict", String(16)),
    Column("consent_id", BigId),  # the ledger row's id, given before it is written
    prefixes=["TEMPORARY"],
)


def _fact(table: Any) -> Fact:
    return Fact(table.c.status, table.c.occurred_at, table.c.dated)


def _json_detail(session: Session, *pairs: Any) -> Any:
    name = session.get_bind().dialect.name
    return func.json_build_object(*pairs) if name == "postgresql" else func.json_object(*pairs)


def merge_consents(
    session: Session,
    facts: Select[Any],
    *,
    actor: str | None,
    policy_version: str | None,
    now: datetime,
) -> MergeTally:
    """Apply an import's consent facts at once, set-based, under the rule above.

    ``facts`` selects ``line, address_id, scope, status, occurred_at, dated, source, alone,
    fresh``: every fact of one file, ``alone`` true only where the fact is the file's one fact
    for its address and scope, ``fresh`` true only where the address was added in this very
    transaction, so that no other can hold or write a state of it (false is always correct for
    both, only slower). The file's own history is settled first (its latest word per address
    and scope), then compared with the current state. Ledger rows, states and one
    ``consent_changed`` audit event per state written are added in ``session``'s transaction.
    """
    conn = session.connection()
    f = _FACTS
    f.drop(conn, checkfirst=True)
    f.create(conn)
    given = facts.subquery()
    postgres = conn.dialect.name == "postgresql"
    next_id: Any = None  # SQLite: counted in the statement
    if postgres:
        # From the table's own sequence (ids stay unique beside concurrent writers). The
        # sequence is looked up once, by oid: named by pg_get_serial_sequence in the
        # statement, it would be looked up again for every row.
        sequence = int(
            conn.scalar(text("SELECT pg_get_serial_sequence('consents', 'id')::regclass::oid"))
        )
        next_id = func.nextval(literal_column(f"{sequence}::regclass"))
    # Facts alone in the file for their address and scope (most of a contacts file) need none
    # of the file's own ordering: judged against the ledger and state only, without the window
    # functions (and their sorts over every fact) that settle an address's several facts.
    for alone in (True, False):
        top = 0
        if not postgres:
            # SQLite: this transaction holds the write lock (it has written the addresses), so
            # no other writer takes ids meanwhile; ids count on from the largest one given.
            top = conn.scalar(
                select(
                    func.coalesce(
                        select(func.max(f.c.consent_id)).scalar_subquery(),
                        select(func.max(Consent.id)).scalar_subquery(),
                        0,
                    )
                )
            )
        chosen = _verdicts(given, alone=alone, next_id=next_id, top=top)
        conn.execute(f.insert().from_select([col.name for col in f.c], chosen))
    if postgres:
        conn.execute(text("ANALYZE import_consent_facts"))  # plans below go by its size
    conn.execute(
        insert_for(session, Consent).from_select(
            [
                "id",
                "address_id",
                "scope",
                "status",
                "source",
                "occurred_at",
                "dated",
                "recorded_at",
                "actor",
                "policy_version",
            ],
            select(
                f.c.consent_id,
                f.c.address_id,
                f.c.scope,
                f.c.status,
                f.c.source,
                f.c.occurred_at,
                f.c.dated,
                literal(now, UTCDateTime()),
                literal(actor, String()),
                literal(policy_version, String()),
            )
            .where(f.c.verdict.in_(_WRITTEN))
            .order_by(f.c.consent_id),
        )
    )
    s = ConsentState.__table__
    # The states, pointing at their ledger rows; the rule decides again in the upsert, so a
    # change that committed meanwhile (an unsubscribe) is never overwritten.
    winners = f.c.verdict.in_([Verdict.CHANGED, Verdict.RENEWED])
    state_columns = ["address_id", "scope", "status", "consent_id", "occurred_at", "dated"]
    states = select(*(f.c[name] for name in state_columns)).where(winners)
    # A fresh address has no state, and none can be written beside this transaction: a plain
    # INSERT, without the upsert's speculative insertion.
    conn.execute(insert(ConsentState).from_select(state_columns, states.where(f.c.fresh == true())))
    upsert = insert_for(session, ConsentState).from_select(
        state_columns, states.where(f.c.fresh == false())
    )
    conn.execute(_unless_overtaken(upsert, recipient_action=False))
    conn.execute(
        insert_for(session, Event).from_select(
            ["occurred_at", "kind", "address_id", "actor", "outcome", "detail"],
            select(
                literal(now, UTCDateTime()),
                literal("consent_changed", String()),
                f.c.address_id,
                literal(actor, String()),
                f.c.status,
                _json_detail(session, "scope", f.c.scope, "source", f.c.source),
            )
            # One event per state this import wrote, not one a concurrent change kept: a fresh
            # address's state was written above (or the INSERT had failed).
            .where(
                winners,
                or_(
                    f.c.fresh == true(),
                    exists().where(
                        s.c.address_id == f.c.address_id,
                        s.c.scope == f.c.scope,
                        s.c.consent_id == f.c.consent_id,
                    ),
                ),
            )
            .order_by(f.c.line),
        )
    )
    tally = MergeTally()
    for scope, verdict, n in conn.execute(
        select(f.c.scope, f.c.verdict, func.count()).group_by(f.c.scope, f.c.verdict)
    ):
        tally.counts[f"{scope}:{verdict}"] += n
    tally.refused = [
        (line, scope)
        for line, scope in conn.execute(
            select(f.c.line, f.c.scope)
            .where(f.c.verdict == Verdict.REFUSED)
            .order_by(f.c.line, f.c.scope)
        )
    ]
    f.drop(conn)
    return tally


_WRITTEN = [Verdict.HISTORY, Verdict.CHANGED, Verdict.RENEWED]


def _verdicts(given: Any, *, alone: bool, next_id: Any, top: int) -> Select[Any]:
    """The rows of ``import_consent_facts`` for the facts of ``given`` that are (``alone``) or
    are not the file's only fact for their address and scope: each with its verdict, and the
    ledger rows to write (every fact not refused and not already there) with their ids, so
    that the states and events below point at their ledger rows without looking each one up.

    Facts the ledger already holds (a re-import) or that repeat an earlier line are known; the
    others are judged against the current state, and among the candidates of an address and
    scope the latest word wins, the rest is history. Ids follow the file's lines within each
    address (``next_id`` is the sequence's nextval on PostgreSQL; on SQLite, None: ids count
    on from ``top``)."""
    c = Consent.__table__.c
    s = ConsentState.__table__
    same_in_ledger = exists().where(
        c.address_id == given.c.address_id,
        c.scope == given.c.scope,
        c.status == given.c.status,
        c.dated == given.c.dated,
        or_(given.c.dated == false(), c.occurred_at == given.c.occurred_at),
    )
    known: list[tuple[Any, str]] = [(same_in_ledger, str(Verdict.KNOWN))]
    if not alone:
        identity = [given.c.address_id, given.c.scope, given.c.status, given.c.dated]
        repeat = func.row_number().over(
            partition_by=[*identity, given.c.occurred_at], order_by=given.c.line
        )
        known.append((repeat > 1, str(Verdict.KNOWN)))
    judged = (
        select(
            given,
            case(
                *known,
                else_=judge(
                    _fact(given),
                    _fact(s),
                    earlier=word_before(_fact(given), given.c.address_id, given.c.scope),
                ),
            ).label("base"),
            s.c.status.label("state_status"),
        )
        .select_from(given)
        .outerjoin(s, and_(s.c.address_id == given.c.address_id, s.c.scope == given.c.scope))
        .where(given.c.alone == (true() if alone else false()))
        # OFFSET 0: computed once, not inlined into every expression that reads it (with its
        # ledger lookups) when the database flattens the subquery.
        .offset(0)
        .subquery()
    )
    decided: list[tuple[Any, Any]] = [(judged.c.base != "candidate", judged.c.base)]
    if not alone:
        rank = func.row_number().over(
            partition_by=[judged.c.address_id, judged.c.scope, judged.c.base],
            order_by=latest_first(_fact(judged)),
        )
        decided.append((rank > 1, str(Verdict.HISTORY)))
    verdict = case(
        *decided,
        (judged.c.state_status == judged.c.status, str(Verdict.RENEWED)),
        else_=str(Verdict.CHANGED),
    )
    names = [col.name for col in _FACTS.c]
    verdicts = (
        select(*(judged.c[n] for n in names[:-2]), verdict.label("verdict")).offset(0).subquery()
    )
    is_written = verdicts.c.verdict.in_(_WRITTEN)
    order = [verdicts.c.address_id, verdicts.c.line, verdicts.c.scope]
    if next_id is None:
        next_id = top + func.row_number().over(partition_by=is_written, order_by=order)
    chosen = select(*(verdicts.c[n] for n in names[:-1]), case((is_written, next_id), else_=None))
    # The ids of an address's several facts in line order; nextval runs after the sort.
    return chosen if alone else chosen.order_by(*order)


def consent_history(session: Session, address_id: int) -> list[Consent]:
    stmt = (
        select(Consent)
        .where(Consent.address_id == address_id)
        .order_by(Consent.occurred_at, Consent.id)
    )
    return list(session.scalars(stmt))
