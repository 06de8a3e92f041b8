"""affiliate shares: which addresses each affiliate has received (scopes its feed)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "affiliate_shares",
        sa.Column("affiliate_id", BIG_ID, nullable=False),
        sa.Column("address_id", BIG_ID, nullable=False),
        sa.Column("release_id", BIG_ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["affiliate_id"],
            ["affiliates.id"],
            name=op.f("fk_affiliate_shares_affiliate_id_affiliates"),
        ),
        sa.ForeignKeyConstraint(
            ["address_id"],
            ["addresses.id"],
            name=op.f("fk_affiliate_shares_address_id_addresses"),
        ),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["affiliate_releases.id"],
            name=op.f("fk_affiliate_shares_release_id_affiliate_releases"),
        ),
        sa.PrimaryKeyConstraint("affiliate_id", "address_id", name=op.f("pk_affiliate_shares")),
    )
    op.create_index("ix_affiliate_shares_release", "affiliate_shares", ["release_id"])


def downgrade() -> None:
    op.drop_index("ix_affiliate_shares_release", table_name="affiliate_shares")
    op.drop_table("affiliate_shares")
