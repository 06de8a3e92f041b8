"""campaigns gain message_nonce: the random part of their messages' Message-IDs

A Message-ID of ``<c1.r3@domain>`` came again after a database reset, or from a second
installation sending from the same domain, and receivers drop a repeated Message-ID as a
duplicate. The nonce is drawn once per campaign (existing campaigns get one here), so a
retry of a message keeps its Message-ID while no two campaigns anywhere share one.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 01:00:00
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_nonce", sa.String(length=32), nullable=True))
    bind = op.get_bind()
    campaigns = sa.table("campaigns", sa.column("id"), sa.column("message_nonce"))
    for (campaign_id,) in bind.execute(sa.select(campaigns.c.id)).all():
        bind.execute(
            campaigns.update()
            .where(campaigns.c.id == campaign_id)
            .values(message_nonce=secrets.token_hex(8))
        )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.alter_column("message_nonce", existing_type=sa.String(length=32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("message_nonce")
