"""campaigns gain published_through: fan-out publishes batches in a bounded window

Fan-out used to publish every batch of a campaign at once (10M recipients: 50,000 tasks and
gigabytes of broker memory). Now a campaign keeps at most ``batch_window`` batches in the
broker and publishes more as batches finish; ``published_through`` is the last delivery id
already published as a batch. Campaigns under way when this runs had all their batches
published by the old fan-out, so they start at their highest delivery id.
``published_batches`` lists the batches published and not yet seen finished, so that a
refill counts the window with one index probe per batch instead of counting its rows.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("published_through", sa.BigInteger(), nullable=True))
    campaigns = sa.table("campaigns", sa.column("id"), sa.column("published_through"))
    deliveries = sa.table("deliveries", sa.column("id"), sa.column("campaign_id"))
    op.get_bind().execute(
        campaigns.update().values(
            published_through=sa.select(sa.func.max(deliveries.c.id))
            .where(deliveries.c.campaign_id == campaigns.c.id)
            .scalar_subquery()
        )
    )


    op.create_table(
        "published_batches",
        sa.Column("campaign_id", BIG_ID, nullable=False),
        sa.Column("first_id", BIG_ID, nullable=False),
        sa.Column("last_id", BIG_ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_published_batches_campaign_id_campaigns"),
        ),
        sa.PrimaryKeyConstraint("campaign_id", "first_id", name=op.f("pk_published_batches")),
    )


def downgrade() -> None:
    op.drop_table("published_batches")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("published_through")
