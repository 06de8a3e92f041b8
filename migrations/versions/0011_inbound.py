"""inbound: reports that come back (bounces, complaints, mailto unsubscribes)

One row per message or provider event (unique key, so a replay applies nothing twice); the
delivery a report was about carries the feedback; a campaign says why it paused itself.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "inbound_messages",
        sa.Column("id", BigId, nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("delivery_id", BigId, nullable=True),
        sa.Column("campaign_id", BigId, nullable=True),
        sa.Column("address_id", BigId, nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("raw_size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["address_id"], ["addresses.id"], name="fk_inbound_messages_address_id_addresses"
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_inbound_messages_campaign_id_campaigns"
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["deliveries.id"], name="fk_inbound_messages_delivery_id_deliveries"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_messages"),
        sa.UniqueConstraint("key", name="uq_inbound_messages_key"),
    )
    op.create_index(
        "ix_inbound_messages_address_kind",
        "inbound_messages",
        ["address_id", "kind", "received_at"],
    )
    op.create_index("ix_inbound_messages_received", "inbound_messages", ["received_at"])
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feedback", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("status_reason")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("feedback_at")
        batch_op.drop_column("feedback")
    op.drop_index("ix_inbound_messages_received", table_name="inbound_messages")
    op.drop_index("ix_inbound_messages_address_kind", table_name="inbound_messages")
    op.drop_table("inbound_messages")
