"""Tables of the application: contacts, campaigns and their deliveries."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from suppression.models import Base, BigId, utcnow

__all__ = [
    "Affiliate",
    "AffiliateRelease",
    "Base",
    "Campaign",
    "CampaignContent",
    "CampaignCount",
    "CampaignStatus",
    "CampaignTaskError",
    "Contact",
    "ContactTag",
    "Delivery",
    "DeliveryStatus",
    "Heartbeat",
    "InboundMessage",
    "PublishedBatch",
    "RateLimit",
    "RequestLimit",
    "SignupRequest",
    "Staff",
    "StaffRole",
    "StaffSession",
    "WebFailure",
    "WebHitTally",
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


def new_message_nonce() -> str:
    return secrets.token_hex(8)


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
    # Why the campaign is paused (e.g. a complaint rate over the threshold).
    status_reason: Mapped[str | None] = mapped_column(Text)
    # The random part of the campaign's Message-IDs: fixed for the campaign (a retry keeps
    # its Message-ID), different on every installation (no receiver sees one twice).
    message_nonce: Mapped[str] = mapped_column(String(32), default=new_message_nonce)
    # Content written in the console (or ``campaign create --body-html``): the version in use.
    # Versions are never changed once written and a campaign's pointer moves only while it is
    # a draft, so the version it was scheduled with is the one that is sent. None: the
    # campaign's content is the folder ``template`` names.
    content_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_contents.id"))
    content: Mapped[CampaignContent | None] = relationship(foreign_keys=[content_id], lazy="joined")
    # Fan-out publishes batches in a bounded window (dispatcher/campaigns/fanout.py): every
    # delivery id up to this one has been published as a batch. None: none yet.
    published_through: Mapped[int | None] = mapped_column(BigId)
    # The fan-out is still adding delivery rows, a range of contacts at a time, while the
    # first batches already send: the campaign is not done before it has them all
    # (``lifecycle.finish_if_done``), and a fan-out that stopped half-way is continued.
    fanning_out: Mapped[bool] = mapped_column(default=False, server_default=false())


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
    failed_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    locked_until: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(200))
    last_sign_in_at: Mapped[datetime | None]


class StaffSession(Base):
    """A signed-in console session. The signed cookie carries a random key whose SHA-256 is
    ``key_hash``; ending the row (sign-out, an admin, a disabled account, a password change)
    ends the session at its next request, whatever the cookie says."""

    __tablename__ = "staff_sessions"
    __table_args__ = (
        Index("ix_staff_sessions_staff", "staff_id", "ended_at"),
        Index(
            "ix_staff_sessions_open",
            "last_seen_at",
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(200))
    # signed_out | ended_by_staff | ended_by_admin | staff_disabled | password_changed
    end_reason: Mapped[str | None] = mapped_column(String(32))


class CampaignTaskError(Base):
    """The last error of one task of a campaign (its fan-out, or one batch), in words a staff
    member can act on; never an address or a secret. ``resolved_at`` is set once the same
    task succeeds, so the open rows are the campaign's current trouble."""

    __tablename__ = "campaign_task_errors"
    __table_args__ = (UniqueConstraint("campaign_id", "task", "first_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(32))  # fan_out | send_batch
    first_id: Mapped[int] = mapped_column(BigInteger)  # the batch's first row; 0 for fan_out
    last_id: Mapped[int] = mapped_column(BigInteger)
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    occurrences: Mapped[int] = mapped_column(default=1)
    first_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]


class Heartbeat(Base):
    """A sign of life from a process staff cannot see: the beat (one row) and each worker.

    ``problem`` is the process's own last complaint (the beat could not reach the broker)."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # beat | worker
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    detail: Mapped[str | None] = mapped_column(Text)
    problem: Mapped[str | None] = mapped_column(Text)
    problem_at: Mapped[datetime | None]


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
        # Bounce and complaint rates read only the few rows with feedback.
        Index(
            "ix_deliveries_feedback",
            "campaign_id",
            "feedback",
            sqlite_where=text("feedback IS NOT NULL"),
            postgresql_where=text("feedback IS NOT NULL"),
        ),
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
    claimed_at: Mapped[datetime | None]  # when this row was taken for sending
    renewed_at: Mapped[datetime | None]  # the claim's last lease renewal
    finished_at: Mapped[datetime | None]
    # What came back about a sent message: hard_bounce, soft_bounce or complaint (the worst).
    feedback: Mapped[str | None] = mapped_column(String(16))
    feedback_at: Mapped[datetime | None]

    @classmethod
    def lease_seen_at(cls) -> Any:
        """The last sign of life of the row's claim: its renewal, or the claim itself."""
        return func.coalesce(cls.renewed_at, cls.claimed_at)


class PublishedBatch(Base):
    """A batch of a campaign published to the broker and not yet seen finished: the window
    of fan-out (dispatcher/campaigns/fanout.py). Its rows say whether it still waits, so a
    row here that outlived its batch (a crash) is simply dropped at the next refill."""

    __tablename__ = "published_batches"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    first_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigId)


class CampaignRender(Base):
    """A campaign's parts rendered once with placeholders and their CSS inlined, stored when
    it is created or scheduled, so sending processes fill them in without premailer (lxml,
    cssutils: ~13 MB a process). ``fingerprint`` covers everything the render read (template
    sources, subject, campaign and settings values); a process whose fingerprint differs
    (a template edited since) renders afresh (dispatcher/sending/stored_render.py)."""

    __tablename__ = "campaign_renders"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    parts: Mapped[str] = mapped_column(Text)  # JSON: subject, text, html segments
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CampaignCount(Base):
    """A change to a campaign's number of deliveries in one status (and skip reason), written
    in the same transaction as the statement that moved the rows.

    Insert-only: concurrent batches never wait on each other's counter rows (an UPDATE of
    one row per status would queue every worker of a campaign behind one lock, and could
    deadlock with an unsubscribe that also moves rows). The current count is the sum of the
    rows; :func:`dispatcher.campaigns.counts.fold` merges them per minute now and then.
    """

    __tablename__ = "campaign_counts"
    __table_args__ = (Index("ix_campaign_counts_campaign", "campaign_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No foreign key, on purpose: checking one takes a KEY SHARE lock on the campaign row,
    # and a claim holding delivery rows would then wait on a cancel that holds the campaign
    # row and waits on those delivery rows (a deadlock the race test met).
    campaign_id: Mapped[int] = mapped_column(BigId)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32), default="")  # "" when none
    change: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(default=utcnow)  # minute granularity once folded


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
    # Set when the person is erased: the SHA-256 the affiliate holds, for its feed.
    erased_digest: Mapped[str | None] = mapped_column(String(64))


class SignupRequest(Base):
    """A subscription asked for on the public form, waiting for its double opt-in.

    Nothing here is consent: consent is recorded (with this row as its proof, ledger source
    ``signup:<id>``) only when the link in the confirmation mail is followed and confirmed.
    The row keeps the proof: when and from where it was asked and confirmed, with which
    browser, on which form, under which policy version and wording, and the Message-ID of the
    confirmation mail that carried the link.
    """

    __tablename__ = "signup_requests"
    __table_args__ = (Index("ix_signup_requests_address", "address"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    address: Mapped[str] = mapped_column(String(254))  # canonical form
    submitted_address: Mapped[str] = mapped_column(String(320))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    marketing: Mapped[bool]
    affiliates: Mapped[bool]
    form: Mapped[str] = mapped_column(String(100))
    policy_version: Mapped[str] = mapped_column(String(64))
    wording: Mapped[dict[str, Any]] = mapped_column(default=dict)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    request_ip: Mapped[str | None] = mapped_column(String(64))
    request_user_agent: Mapped[str | None] = mapped_column(String(512))
    message_id: Mapped[str] = mapped_column(String(200))
    # Random, carried in the confirmation link: an id alone can name another person's signup
    # once a row is deleted (SQLite hands the highest id out again).
    link_nonce: Mapped[str] = mapped_column(String(32))
    # queued → sent | failed (the mail leaves after the page is answered).
    mail_status: Mapped[str] = mapped_column(String(16), default="queued")
    mailed_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]
    confirm_ip: Mapped[str | None] = mapped_column(String(64))
    confirm_user_agent: Mapped[str | None] = mapped_column(String(512))
    address_id: Mapped[int | None] = mapped_column(ForeignKey("addresses.id"))


class RequestLimit(Base):
    """Fixed-window counters for the public forms (per IP, per address and day), kept in the
    database so that every web worker process counts against the same limits."""

    __tablename__ = "request_limits"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    window_start: Mapped[float]
    count: Mapped[int]


class WebFailure(Base):
    """Failed credential checks per key (``ip:<network>`` or ``affiliate:<name>``) in the
    current fixed window: every web worker process reads and writes the same counts."""

    __tablename__ = "web_failures"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[float]
    count: Mapped[int] = mapped_column(default=0)


class WebHitTally(Base):
    """Refused recipient hits (bad links, oversized or malformed requests) counted per
    network, route, outcome and minute: the first of each gets an audit event, the rest
    only raise ``count``, so garbage cannot grow the audit trail faster than this key."""

    __tablename__ = "web_hit_tallies"

    minute: Mapped[datetime] = mapped_column(primary_key=True)
    network: Mapped[str] = mapped_column(String(64), primary_key=True)
    route: Mapped[str] = mapped_column(String(32), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
    last_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboundMessage(Base):
    """Every message or provider event that came back, recorded once, with what it changed.

    ``key`` is the report's Message-ID (or a provider's event id, or a hash of the raw bytes
    when it has none), so replaying a mailbox applies nothing twice. The raw message is kept
    for audit up to a bound; ``raw_size`` says how large it was.
    """

    __tablename__ = "inbound_messages"
    __table_args__ = (
        Index("ix_inbound_messages_address_kind", "address_id", "kind", "received_at"),
        Index("ix_inbound_messages_received", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    source: Mapped[str] = mapped_column(String(32))  # smtp | maildir | imap | file | ses | …
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    # applied | unmatched | unverified | ignored | rejected | unparsed
    outcome: Mapped[str] = mapped_column(String(16))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id"))
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    address_id: Mapped[int | None] = mapped_column(ForeignKey("addresses.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    raw_size: Mapped[int] = mapped_column(default=0)
