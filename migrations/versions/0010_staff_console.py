"""staff console: staff accounts, campaign content versions

Staff sign in to the console with a role (viewer, editor, admin) and an Argon2id password
set through a one-time link. A campaign's content may live in the database, one immutable
row per saved version; ``campaigns.content_id`` names the version in use (frozen once the
campaign leaves the draft state).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "staff",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(300), nullable=True),
        sa.Column("password_nonce", sa.String(64), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("locked_until", When, nullable=True),
        sa.Column("disabled_at", When, nullable=True),
        sa.Column("time_zone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("created_at", When, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("last_sign_in_at", When, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff")),
        sa.UniqueConstraint("email", name=op.f("uq_staff_email")),
    )
    op.create_table(
        "campaign_contents",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("campaign_id", BigId, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("preheader", sa.String(300), nullable=False),
        sa.Column("body_format", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=True),
        sa.Column("layout", sa.String(100), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_contents_campaign_id_campaigns"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_contents")),
        sa.UniqueConstraint(
            "campaign_id", "version", name=op.f("uq_campaign_contents_campaign_id_version")
        ),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_id", BigId, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_campaigns_content_id_campaign_contents"),
            "campaign_contents",
            ["content_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_campaigns_content_id_campaign_contents"), type_="foreignkey"
        )
        batch_op.drop_column("content_id")
    op.drop_table("campaign_contents")
    op.drop_table("staff")
