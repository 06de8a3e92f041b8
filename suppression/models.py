"""Tables of the policy core. ``Base`` here is the one declarative base of the project."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on both backends (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC was expected")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Scope(enum.StrEnum):
    """What a consent or a suppression is about."""

    MARKETING = "marketing"
    AFFILIATES = "affiliates"


class ConsentStatus(enum.StrEnum):
    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"


class Reason(enum.StrEnum):
    """Why an address is suppressed."""

    UNSUBSCRIBE = "unsubscribe"
    HARD_BOUNCE = "hard_bounce"
    # ``soft_bounce_limit`` temporary failures within ``soft_bounce_days``: the mailbox may
    # come back (full, over quota), so staff can tell it from a dead one and lift it.
    REPEATED_SOFT_BOUNCE = "repeated_soft_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"
    POSTAL_REQUEST = "postal_request"
    LEGAL = "legal"
    # The person asked us to delete their data: only a keyed hash of the address is left.
    ERASED = "erased"


GLOBAL_SCOPE = "global"


def affiliate_scope(affiliate_id: int) -> str:
    """Suppression scope that keeps one address out of one affiliate's lists."""
    return f"affiliate:{affiliate_id}"


class Address(Base):
    """One canonical e-mail address. Consent, suppressions and contacts all point here."""

    __tablename__ = "addresses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address: Mapped[str] = mapped_column(String(254), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ErasureSecret(Base):
    """The one key of the erased-address hashes, stored only wrapped under the signing keys.

    Signing keys are retired after a year; the hashes must be recognised for ever. So they
    are made with this secret, which every signing key in the rotation list wraps (by key
    id: ``{kid: [nonce, sealed]}``, AES-256-GCM); a new key adds its wrap while an old one
    still opens it. One row (id 1): the first process to write it decides the secret.
    """

    __tablename__ = "erasure_secret"

    id: Mapped[int] = mapped_column(primary_key=True)
    wraps: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Consent(Base):
    """The consent ledger: every change is a row; nothing here is updated or deleted."""

    __tablename__ = "consents"
    # Every query names an address (and mostly a scope); unique, so that a state can point at
    # a word of its own address and scope (ConsentState's foreign key).
    __table_args__ = (
        Index("uq_consents_address_id_scope_id", "address_id", "scope", "id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address_id: Mapped[int] = mapped_column(ForeignKey("addresses.id"))
    scope: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(200))
    occurred_at: Mapped[datetime]
    # False when the source gave no time: occurred_at is then when we recorded it, and the
    # rule in consent.py ranks an undated opt-in below every opt-out.
    dated: Mapped[bool] = mapped_column(default=True, server_default=true())
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(200))
    ip: Mapped[str | None] = mapped_column(String(64))
    policy_version: Mapped[str | None] = mapped_column(String(64))


class ConsentState(Base):
    """The latest word per (address, scope): a ledger row, chosen by the rule in ``consent.py``.

    The gate reads this by primary key, so its cost does not grow with the ledger's history.
    One foreign key, to the ledger row of the same address and scope (which in turn names an
    existing address): one check per state written, where an import writes a million.
    """

    __tablename__ = "consent_states"
    __table_args__ = (
        ForeignKeyConstraint(
            ["address_id", "scope", "consent_id"],
            ["consents.address_id", "consents.scope", "consents.id"],
            name="fk_consent_states_address_id_consents",
        ),
    )

    address_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    consent_id: Mapped[int] = mapped_column(BigId)
    occurred_at: Mapped[datetime]
    dated: Mapped[bool] = mapped_column(default=True, server_default=true())


class Suppression(Base):
    """An address kept from mail of a scope (or all mail: scope ``global``), with the reason.

    A lifted suppression keeps its row, with who lifted it, when and why.
    """

    __tablename__ = "suppressions"
    __table_args__ = (
        Index(
            "uq_suppressions_active",
            "address_id",
            "scope",
            "reason",
            unique=True,
            sqlite_where=text("lifted_at IS NULL"),
            postgresql_where=text("lifted_at IS NULL"),
        ),
        Index("ix_suppressions_created_at", "created_at"),
        Index("ix_suppressions_lifted_at", "lifted_at"),
        # The console's list filters by reason or scope and pages by id (keyset).
        Index("ix_suppressions_reason_id", "reason", "id"),
        Index("ix_suppressions_scope_id", "scope", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address_id: Mapped[int] = mapped_column(ForeignKey("addresses.id"))
    scope: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))
    lifted_at: Mapped[datetime | None]
    lifted_by: Mapped[str | None] = mapped_column(String(200))
    lift_reason: Mapped[str | None] = mapped_column(Text)


# What the audit log shows: whatever a staff member did or was refused. Queries use this very
# text so that both backends can prove the partial index ``ix_events_staff`` applies.
STAFF_EVENTS = "(actor IS NOT NULL OR kind LIKE 'staff_%' OR kind LIKE 'console_%')"


class Event(Base):
    """Audit trail: every change of an address's state and every recipient-facing hit."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_kind_at", "kind", "occurred_at"),
        Index("ix_events_address", "address_id"),
        # The console's audit log: staff events newest first, by kind or by staff member,
        # paged by id (keyset).
        Index(
            "ix_events_staff",
            "id",
            sqlite_where=text(STAFF_EVENTS),
            postgresql_where=text(STAFF_EVENTS),
        ),
        Index("ix_events_kind_id", "kind", "id"),
        Index("ix_events_actor_id", "actor", "id"),
        Index(
            "uq_events_fold_key",
            "fold_key",
            unique=True,
            sqlite_where=text("fold_key IS NOT NULL"),
            postgresql_where=text("fold_key IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(64))
    address_id: Mapped[int | None] = mapped_column(ForeignKey("addresses.id"))
    actor: Mapped[str | None] = mapped_column(String(200))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    outcome: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # A folded page hit (suppression.events): how many times, when last; occurred_at is the
    # first. fold_key names the act, caller and window a repeat folds into (NULL once spent).
    count: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    last_at: Mapped[datetime | None]
    fold_key: Mapped[str | None] = mapped_column(String(64))
    # The tamper-evident chain (suppression.audit): filled in when the event is sealed.
    seal_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    chain_hash: Mapped[str | None] = mapped_column(String(64))
