"""campaign_renders: a campaign's parts rendered and CSS-inlined once, for every process

Sending processes used to inline each campaign's CSS themselves (premailer, lxml and
cssutils in every pool process: ~13 MB each). The process that creates or schedules a
campaign stores the rendered parts with a fingerprint of what the render read; a sending
process with the same fingerprint fills them in without importing premailer.

Revision ID: 0021
Revises: 0019
Create Date: 2026-12-01 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "campaign_renders",
        sa.Column("campaign_id", BIG_ID, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("parts", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_renders_campaign_id_campaigns"),
        ),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaign_renders")),
    )


def downgrade() -> None:
    op.drop_table("campaign_renders")
