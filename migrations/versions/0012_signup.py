"""signup: pending double opt-in requests (the proof) and request-limit counters

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "signup_requests",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("submitted_address", sa.String(length=320), nullable=False),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("marketing", sa.Boolean(), nullable=False),
        sa.Column("affiliates", sa.Boolean(), nullable=False),
        sa.Column("form", sa.String(length=100), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("wording", sa.JSON(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_ip", sa.String(length=64), nullable=True),
        sa.Column("request_user_agent", sa.String(length=512), nullable=True),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("mail_status", sa.String(length=16), nullable=False),
        sa.Column("mailed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirm_ip", sa.String(length=64), nullable=True),
        sa.Column("confirm_user_agent", sa.String(length=512), nullable=True),
        sa.Column("address_id", BIG_ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["address_id"],
            ["addresses.id"],
            name=op.f("fk_signup_requests_address_id_addresses"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signup_requests")),
    )
    op.create_index("ix_signup_requests_address", "signup_requests", ["address"], unique=False)
    op.create_table(
        "request_limits",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("window_start", sa.Double(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_request_limits")),
    )


def downgrade() -> None:
    op.drop_table("request_limits")
    op.drop_index("ix_signup_requests_address", table_name="signup_requests")
    op.drop_table("signup_requests")
