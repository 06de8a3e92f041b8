"""Set-based import: parsed rows go into temporary tables (PostgreSQL COPY, SQLite
executemany), then a handful of INSERT … SELECT / UPDATE statements merge them.

Rows of one address are settled together: names from its latest row that has them (latest by
consent_at, undated rows counting as the oldest), attributes likewise (merged into what the
contact has), tags from every row, the source from its first line and the collection time
from its earliest consent_at. Consent goes through
:func:`suppression.consent.merge_consents`, which holds the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dispatcher.models import Contact, ContactTag
from suppression.consent import MergeTally, merge_consents
from suppression.models import Address, Consent, ConsentState, Scope, UTCDateTime
from suppression.sql import insert_for

# One parsed row: line, address, submitted, first_name, last_name, source, consent_at,
# marketing, affiliates, attributes (JSON text or None).
StagedRow = tuple[
    int, str, str, str | None, str | None, str, datetime | None, str | None, str | None, str | None
]

_meta = MetaData()
ROWS = Table(
    "import_rows",
    _meta,
    Column("line", Integer, nullable=False),
    Column("address", String(254), nullable=False),
    Column("submitted", String(320), nullable=False),
    Column("first_name", String(200)),
    Column("last_name", String(200)),
    Column("source", String(200), nullable=False),
    Column("consent_at", UTCDateTime()),
    Column("marketing", String(16)),
    Column("affiliates", String(16)),
    Column("attributes", Text),
    prefixes=["TEMPORARY"],
)
TAGS = Table(
    "import_tags",
    _meta,
    Column("address", String(254), nullable=False),
    Column("tag", String(100), nullable=False),
    prefixes=["TEMPORARY"],
)
PEOPLE = Table(
    "import_people",
    _meta,
    Column("address_id", BigInteger, nullable=False),
    Column("address", String(254), nullable=False),
    Column("submitted", String(320), nullable=False),
    Column("first_name", String(200)),
    Column("last_name", String(200)),
    Column("source", String(200), nullable=False),
    Column("collected_at", UTCDateTime()),
    Column("attributes", Text),
    Column("contact_id", BigInteger),
    Column("is_new", Boolean, nullable=False),
    Column("changed", Boolean, nullable=False),
    Column("alone", Boolean, nullable=False),  # on one row of the file
    # The address was added by this import, so no other transaction can hold anything of it
    # (it cannot see the row until the import commits): its consent states are inserted
    # without the upsert's conflict handling.
    Column("fresh", Boolean, nullable=False),
    prefixes=["TEMPORARY"],
)
# PostgreSQL: the ids of the addresses this import added.
FRESH = Table(
    "import_fresh",
    _meta,
    Column("address_id", BigInteger, primary_key=True),
    prefixes=["TEMPORARY"],
)
_ROW_COLUMNS = [c.name for c in ROWS.c]


@lru_cache(maxsize=1 << 16)
def _sqlite_time(value: datetime | None) -> str | None:
    """The text form SQLAlchemy's SQLite DateTime stores ("0999-06-01 00:00:00.000000"), so
    the consent rule, which compares the stored text, compares like with like. The year is
    always four digits: strftime's %Y leaves years before 1000 unpadded on Linux, and
    "999-…" sorts after "2025-…", which would make the oldest opt-in the latest word."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class Stage:
    """The temporary tables of one import, on the session's connection and transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.conn = session.connection()
        self.postgres = self.conn.dialect.name == "postgresql"
        self.tables = (ROWS, TAGS, PEOPLE, FRESH) if self.postgres else (ROWS, TAGS, PEOPLE)
        if self.postgres:
            # For this transaction only. JIT compiles the merge's statements for seconds (their
            # cost estimates are large) and then saves nothing on a few hash joins; the sorts
            # of the merge (window functions over the file's consent facts) spill to disk at
            # the default 4 MB.
            self.conn.execute(text("SET LOCAL jit = off"))
            self.conn.execute(text("SET LOCAL work_mem = '64MB'"))
        for table in self.tables:
            table.drop(self.conn, checkfirst=True)
            table.create(self.conn)

    def load(self, rows: Sequence[StagedRow], tags: Sequence[tuple[str, str]]) -> None:
        driver: Any = self.conn.connection.driver_connection
        if self.postgres:
            with driver.cursor() as cursor:
                with cursor.copy(f"COPY import_rows ({', '.join(_ROW_COLUMNS)}) FROM STDIN") as cp:
                    for row in rows:
                        cp.write_row(row)
                if tags:
                    with cursor.copy("COPY import_tags (address, tag) FROM STDIN") as cp:
                        for tag in tags:
                            cp.write_row(tag)
            return
        cursor = driver.cursor()
        try:
            cursor.executemany(
                f"INSERT INTO import_rows VALUES ({', '.join('?' * len(_ROW_COLUMNS))})",
                [(*r[:6], _sqlite_time(r[6]), *r[7:]) for r in rows],
            )
            cursor.executemany("INSERT INTO import_tags VALUES (?, ?)", tags)
        finally:
            cursor.close()

    def drop(self) -> None:
        for table in self.tables:
            table.drop(self.conn)


def _add_addresses(session: Session, add: Any) -> None:
    """PostgreSQL: run ``add`` (INSERT INTO addresses … SELECT the addresses not known yet),
    noting the ids it adds in import_fresh. Tried as a plain INSERT, which costs half as much
    as ON CONFLICT's speculative insertion; when another writer added one of the addresses
    meanwhile (a signup), that is undone and the INSERT runs again with ON CONFLICT DO NOTHING,
    whose RETURNING names only the addresses this import added."""
    a = Address.__table__
    for attempt in (add, add.on_conflict_do_nothing()):
        added = attempt.returning(a.c.id).cte("added")
        note = FRESH.insert().from_select(["address_id"], select(added.c.id)).add_cte(added)
        try:
            with session.begin_nested():
                session.connection().execute(note)
            return
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", None) != "23505" or attempt is not add:
                raise


@dataclass
class MergeReport:
    created: int
    updated: int
    unchanged: int
    consent: MergeTally


def _merged_attributes(postgres: bool, old: Any, new: Any) -> Any:
    if postgres:
        return cast(cast(old, JSONB).op("||")(cast(new, JSONB)), JSON)
    return func.json_patch(old, new)


def _attributes_differ(postgres: bool, old: Any, new: Any) -> Any:
    if postgres:
        return cast(old, JSONB).op("||")(cast(new, JSONB)) != cast(old, JSONB)
    return func.json_patch(old, new) != func.json(old)


def _differs(pg: bool, new: Any, old: Any) -> Any:
    """SQL: whether a file's details (``new``) change a contact's (``old``)."""
    return or_(
        and_(new.first_name.is_not(None), new.first_name.is_distinct_from(old.first_name)),
        and_(new.last_name.is_not(None), new.last_name.is_distinct_from(old.last_name)),
        and_(new.attributes.is_not(None), _attributes_differ(pg, old.attributes, new.attributes)),
    )


def merge(
    stage: Stage,
    *,
    actor: str | None,
    policy_version: str | None,
    now: datetime,
) -> MergeReport:
    """Merge the staged rows into addresses, contacts, tags and consent, set-based."""
    conn, session, pg = stage.conn, stage.session, stage.postgres
    r, t, p = ROWS, TAGS, PEOPLE
    conn.execute(text("CREATE INDEX ix_import_rows_address ON import_rows (address)"))
    if pg:
        conn.execute(text("ANALYZE import_rows"))
        conn.execute(text("ANALYZE import_tags"))
    else:
        # SQLite would build this index for each of the two statements that join the tags.
        conn.execute(text("CREATE INDEX ix_import_tags_address ON import_tags (address)"))
    at_now = literal(now, UTCDateTime())
    a = Address.__table__
    # Only the addresses not known yet (a re-import inserts none), in the order the file first
    # names them: their ids then follow the file, and what points at them below is written in
    # id order, so foreign-key checks and index entries land on neighbouring pages instead of
    # all over a large table. ON CONFLICT: one another writer added meanwhile (on PostgreSQL
    # only when a plain INSERT met one: _add_addresses).
    first_seen = select(r.c.address, func.min(r.c.line).label("line")).group_by(r.c.address)
    unknown = first_seen.subquery()
    add = insert_for(session, Address).from_select(
        ["address", "created_at"],
        # The WHERE also keeps SQLite from reading "SELECT … FROM t ON CONFLICT" as a join.
        select(unknown.c.address, at_now)
        .where(~exists().where(a.c.address == unknown.c.address))
        .order_by(unknown.c.line),
    )
    if pg:
        _add_addresses(session, add)
    else:
        conn.execute(add.on_conflict_do_nothing())
    # One row per address: details from its latest row (by consent_at, undated rows counting
    # as the oldest, then by line), its origin from its first line.
    last = [r.c.consent_at.is_(None), r.c.consent_at.desc(), r.c.line.desc()]
    by_address = [r.c.address]
    # Most addresses are on one row: only the others need the window functions (and sorts).
    multi = select(r.c.address).group_by(r.c.address).having(func.count() > 1)
    single = select(
        r.c.address,
        literal(1, Integer()).label("rank"),
        r.c.submitted,
        r.c.first_name,
        r.c.last_name,
        r.c.source,
        r.c.consent_at.label("collected_at"),
        r.c.attributes,
        true().label("alone"),
    ).where(r.c.address.not_in(multi))
    windowed = select(
        r.c.address,
        func.row_number().over(partition_by=by_address, order_by=last).label("rank"),
        r.c.submitted,
        func.first_value(r.c.first_name)
        .over(partition_by=by_address, order_by=[r.c.first_name.is_(None), *last])
        .label("first_name"),
        func.first_value(r.c.last_name)
        .over(partition_by=by_address, order_by=[r.c.last_name.is_(None), *last])
        .label("last_name"),
        func.first_value(r.c.source)
        .over(partition_by=by_address, order_by=r.c.line)
        .label("source"),
        func.min(r.c.consent_at).over(partition_by=by_address).label("collected_at"),
        func.first_value(r.c.attributes)
        .over(partition_by=by_address, order_by=[r.c.attributes.is_(None), *last])
        .label("attributes"),
        false().label("alone"),
    ).where(r.c.address.in_(multi))
    people = union_all(single, windowed).subquery()
    contacts = Contact.__table__
    conn.execute(
        p.insert().from_select(
            [
                "address_id",
                "address",
                "submitted",
                "first_name",
                "last_name",
                "source",
                "collected_at",
                "attributes",
                "contact_id",
                "is_new",
                "changed",
                "alone",
                "fresh",
            ],
            select(
                a.c.id,
                people.c.address,
                people.c.submitted,
                people.c.first_name,
                people.c.last_name,
                people.c.source,
                people.c.collected_at,
                people.c.attributes,
                contacts.c.id,
                contacts.c.id.is_(None),
                # An existing contact the file changes (names, attributes; tags and consent
                # are looked at below).
                and_(contacts.c.id.is_not(None), _differs(pg, people.c, contacts.c)),
                people.c.alone,
                a.c.id.in_(select(FRESH.c.address_id)) if pg else false(),
            )
            .select_from(people)
            .join(a, a.c.address == people.c.address)
            .outerjoin(contacts, contacts.c.address_id == a.c.id)
            .where(people.c.rank == 1),
        )
    )
    conn.execute(text("CREATE INDEX ix_import_people_address ON import_people (address)"))
    if pg:
        conn.execute(text("ANALYZE import_people"))
    # Existing contacts: the change.
    old = contacts.c
    conn.execute(
        update(Contact)
        .where(old.id == p.c.contact_id, p.c.changed == true())
        .values(
            first_name=func.coalesce(p.c.first_name, old.first_name),
            last_name=func.coalesce(p.c.last_name, old.last_name),
            attributes=func.coalesce(
                _merged_attributes(pg, old.attributes, p.c.attributes), old.attributes
            ),
            updated_at=at_now,
        )
    )
    empty: Any = cast(literal("{}"), JSON) if pg else literal("{}")
    conn.execute(
        insert_for(session, Contact).from_select(
            [
                "address_id",
                "submitted_address",
                "first_name",
                "last_name",
                "attributes",
                "source",
                "collected_at",
                "created_at",
                "updated_at",
            ],
            select(
                p.c.address_id,
                p.c.submitted,
                p.c.first_name,
                p.c.last_name,
                func.coalesce(cast(p.c.attributes, JSON) if pg else p.c.attributes, empty),
                p.c.source,
                func.coalesce(p.c.collected_at, at_now),
                at_now,
                at_now,
            )
            .where(p.c.is_new == true())
            .order_by(p.c.address_id),
        )
    )
    # Tags: a new tag on an existing contact is a change.
    ct = ContactTag.__table__
    tagged = (
        select(p.c.contact_id)
        .select_from(t)
        .join(p, p.c.address == t.c.address)
        .where(
            p.c.is_new == false(),
            ~exists().where(ct.c.contact_id == p.c.contact_id, ct.c.tag == t.c.tag),
        )
    )
    conn.execute(
        update(p).where(p.c.contact_id.in_(tagged), p.c.changed == false()).values(changed=true())
    )
    tags_of = (
        select(old.id, t.c.tag)
        .select_from(t)
        .join(p, p.c.address == t.c.address)
        .join(contacts, old.address_id == p.c.address_id)
    )
    # A contact this import created from one row: its tags (deduplicated when the row was
    # read) are all new and no other writer can see the contact yet, so a plain INSERT.
    created_alone = and_(p.c.is_new == true(), p.c.alone == true())
    conn.execute(
        insert_for(session, ContactTag).from_select(
            ["contact_id", "tag"], tags_of.where(created_alone)
        )
    )
    # The others: only the tags the contact lacks (a re-import inserts none); ON CONFLICT for
    # a tag on several rows of one address, or one added meanwhile.
    conn.execute(
        insert_for(session, ContactTag)
        .from_select(
            ["contact_id", "tag"],
            tags_of.where(
                ~created_alone, ~exists().where(ct.c.contact_id == old.id, ct.c.tag == t.c.tag)
            ),
        )
        .on_conflict_do_nothing()
    )
    # Consent: every fact of the file, to the one place that holds the rule.
    before = conn.scalar(select(func.coalesce(func.max(Consent.id), 0)))
    facts = union_all(
        *(
            select(
                r.c.line,
                p.c.address_id,
                literal(str(scope), String()).label("scope"),
                column.label("status"),
                func.coalesce(r.c.consent_at, at_now).label("occurred_at"),
                r.c.consent_at.is_not(None).label("dated"),
                r.c.source,
                p.c.alone,
                p.c.fresh,
            )
            .select_from(r)
            .join(p, p.c.address == r.c.address)
            .where(column.is_not(None))
            for scope, column in (
                (Scope.MARKETING, r.c.marketing),
                (Scope.AFFILIATES, r.c.affiliates),
            )
        )
    )
    tally = merge_consents(
        session, select(facts.subquery()), actor=actor, policy_version=policy_version, now=now
    )
    s = ConsentState.__table__
    conn.execute(
        update(p)
        .where(
            p.c.is_new == false(),
            p.c.changed == false(),
            exists().where(s.c.address_id == p.c.address_id, s.c.consent_id > before),
        )
        .values(changed=true())
    )
    created, updated, total = (
        int(v or 0)
        for v in conn.execute(
            select(
                func.sum(case_int(p.c.is_new == true())),
                func.sum(case_int(and_(p.c.is_new == false(), p.c.changed == true()))),
                func.count(),
            )
        ).one()
    )
    return MergeReport(created, updated, total - created - updated, tally)


def case_int(condition: Any) -> Any:
    return case((condition, 1), else_=0)
