"""console at scale: campaign counters, server-side staff sessions, indexes for the log pages

``campaign_counts`` is the insert-only ledger of how many deliveries of a campaign are in each
status and skip reason (dispatcher/campaigns/counts.py); it is filled here from the rows that
exist, one row per campaign, status, reason and minute (of ``finished_at``, else
``created_at``), so the sends-per-minute chart of past campaigns survives.
``staff_sessions`` holds the console's sessions (the cookie names one by a random id whose
SHA-256 is stored), so staff and admins can list and end them.
The indexes serve the keyset pages of the audit log and the suppressions list.

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-01 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The audit page's rows: whatever a staff member did or was refused. The page's query uses
# this very text, so both backends prove the partial index applies.
STAFF_EVENTS = "(actor IS NOT NULL OR kind LIKE 'staff_%' OR kind LIKE 'console_%')"


def upgrade() -> None:
    op.create_table(
        "campaign_counts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("campaign_id", BigId, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("change", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        # No foreign key: its check would lock the campaign row (see the model).
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_counts")),
    )
    op.create_index("ix_campaign_counts_campaign", "campaign_counts", ["campaign_id", "at"])
    if op.get_bind().dialect.name == "postgresql":
        minute = "date_trunc('minute', coalesce(finished_at, created_at))"
    else:
        minute = "strftime('%Y-%m-%d %H:%M:00.000000', coalesce(finished_at, created_at))"
    op.execute(
        f"""INSERT INTO campaign_counts (campaign_id, status, reason, change, at)
        SELECT campaign_id, status, coalesce(skip_reason, ''), count(*), {minute}
        FROM deliveries GROUP BY campaign_id, status, coalesce(skip_reason, ''), {minute}"""
    )

    op.create_table(
        "staff_sessions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("staff_id", BigId, nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=200), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff.id"],
            name=op.f("fk_staff_sessions_staff_id_staff"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_sessions")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_staff_sessions_key_hash")),
    )
    op.create_index("ix_staff_sessions_staff", "staff_sessions", ["staff_id", "ended_at"])
    op.create_index(
        "ix_staff_sessions_open",
        "staff_sessions",
        ["last_seen_at"],
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )

    op.create_index(
        "ix_events_staff",
        "events",
        ["id"],
        sqlite_where=sa.text(STAFF_EVENTS),
        postgresql_where=sa.text(STAFF_EVENTS),
    )
    op.create_index("ix_events_kind_id", "events", ["kind", "id"])
    op.create_index("ix_events_actor_id", "events", ["actor", "id"])
    op.create_index(
        "ix_deliveries_feedback",
        "deliveries",
        ["campaign_id", "feedback"],
        sqlite_where=sa.text("feedback IS NOT NULL"),
        postgresql_where=sa.text("feedback IS NOT NULL"),
    )
    op.create_index("ix_suppressions_reason_id", "suppressions", ["reason", "id"])
    op.create_index("ix_suppressions_scope_id", "suppressions", ["scope", "id"])


def downgrade() -> None:
    op.drop_index("ix_suppressions_scope_id", table_name="suppressions")
    op.drop_index("ix_suppressions_reason_id", table_name="suppressions")
    op.drop_index("ix_deliveries_feedback", table_name="deliveries")
    op.drop_index("ix_events_actor_id", table_name="events")
    op.drop_index("ix_events_kind_id", table_name="events")
    op.drop_index("ix_events_staff", table_name="events")
    op.drop_index("ix_staff_sessions_open", table_name="staff_sessions")
    op.drop_index("ix_staff_sessions_staff", table_name="staff_sessions")
    op.drop_table("staff_sessions")
    op.drop_index("ix_campaign_counts_campaign", table_name="campaign_counts")
    op.drop_table("campaign_counts")
