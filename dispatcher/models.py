"""Tables of the application: contacts, campaigns and their deliveries."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from suppression.models import Base, BigId, utcnow

__all__ = [
    "Affiliate",
    "AffiliateRelease",
    "Base",
    "Campaign",
    "CampaignContent",
    "CampaignStatus",
    "Contact",
    "ContactTag",
    "Delivery",
    "DeliveryStatus",
    "RateLimit",
    "Staff",
    "StaffRole",
]


class Contact(Base):
    """A person who gave us their address: where and when it came from, and what we know."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address_id: Mapped[int] = mapped_column(ForeignKey("addresses.id"), unique=True)
    submitted_address: Mapped[str] = mapped_column(String(320))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[str] = mapped_column(String(200))
    collected_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ContactTag(Base):
    """A label staff can target (a genre licensed, a customer segment)."""

    __tablename__ = "contact_tags"

    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)

    __table_args__ = (Index("ix_contact_tags_tag", "tag"),)


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_status_scheduled_at", "status", "scheduled_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(500))
    template: Mapped[str] = mapped_column(String(100))
    purpose: Mapped[str] = mapped_column(String(32))
    audience: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT.value)
    scheduled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Content written in the console (or ``campaign create --body-html``): the version in use.
    # Versions are never changed once written and a campaign's pointer moves only while it is
    # a draft, so the version it was scheduled with is the one that is sent. None: the
    # campaign's content is the folder ``template`` names.
    content_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_contents.id"))
    content: Mapped[CampaignContent | None] = relationship(foreign_keys=[content_id], lazy="joined")


class CampaignContent(Base):
    """One saved version of a campaign's staff-written content (never updated)."""

    __tablename__ = "campaign_contents"
    __table_args__ = (UniqueConstraint("campaign_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", use_alter=True))
    version: Mapped[int]
    subject: Mapped[str] = mapped_column(String(500))
    preheader: Mapped[str] = mapped_column(String(300), default="")
    body_format: Mapped[str] = mapped_column(String(16), default="html")  # html | markdown
    body: Mapped[str] = mapped_column(Text)
    # None: the text part is generated from the rendered HTML.
    body_text: Mapped[str | None] = mapped_column(Text)
    layout: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))


class StaffRole(enum.StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"


class Staff(Base):
    """A staff member who may sign in to the console."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # Argon2id (argon2-cffi); None until the set-password link has been used.
    password_hash: Mapped[str | None] = mapped_column(String(300))
    # A set-password link names this nonce; using it (or issuing a new one) replaces it.
    password_nonce: Mapped[str | None] = mapped_column(String(64))
    failed_attempts: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))
    last_sign_in_at: Mapped[datetime | None]


class DeliveryStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


TERMINAL_STATUSES = frozenset(
    {
        DeliveryStatus.SENT,
        DeliveryStatus.FAILED,
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.CANCELLED,
        DeliveryStatus.UNKNOWN,
    }
)


class Delivery(Base):
    """One message of one campaign to one contact: at most one, ever."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id"),
        # With id last, a batch (an id range) and the fan-out read only their own rows.
        Index("ix_deliveries_campaign_status", "campaign_id", "status", "id"),
        Index("ix_deliveries_address_status", "address_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    # Copied from the contact at fan-out so the gate and unsubscribe need no join.
    address_id: Mapped[int] = mapped_column(ForeignKey("addresses.id"))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.QUEUED.value)
    skip_reason: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    claim_token: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class RateLimit(Base):
    """Shared send pacing: the earliest time (epoch seconds) the next message under ``key``
    may go. Workers reserve slots here with one upsert per batch, so limits hold across any
    number of workers and machines."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    next_at: Mapped[float]
    last_cost: Mapped[float] = mapped_column(default=0.0)


class Affiliate(Base):
    """An affiliated company that may receive opted-in contacts, limited to its fields."""

    __tablename__ = "affiliates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    contact_email: Mapped[str] = mapped_column(String(254))
    fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    credential_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))
    disabled_at: Mapped[datetime | None]


class AffiliateRelease(Base):
    """Every list or feed released to an affiliate: who asked, how many rows, what hash."""

    __tablename__ = "affiliate_releases"
    __table_args__ = (Index("ix_affiliate_releases_affiliate", "affiliate_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    affiliate_id: Mapped[int] = mapped_column(ForeignKey("affiliates.id"))
    kind: Mapped[str] = mapped_column(String(16))  # export | feed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    requested_by: Mapped[str | None] = mapped_column(String(200))
    row_count: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(Text)
    since: Mapped[datetime | None]


class AffiliateShare(Base):
    """An address that has been in a list released to an affiliate (one row per pair).

    The suppression feed only ever names addresses the affiliate already holds, so it cannot
    reveal who else is on our lists; ``release_id`` is the latest export that included it.
    """

    __tablename__ = "affiliate_shares"
    __table_args__ = (Index("ix_affiliate_shares_release", "release_id"),)

    affiliate_id: Mapped[int] = mapped_column(ForeignKey("affiliates.id"), primary_key=True)
    address_id: Mapped[int] = mapped_column(ForeignKey("addresses.id"), primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("affiliate_releases.id"))
