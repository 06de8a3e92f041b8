"""privacy: the audit chain's columns, and affiliate shares that outlive an erasure

``events.seal_seq``/``chain_hash`` hold the tamper-evident chain (suppression/audit.py).
``affiliate_shares.erased_digest`` keeps, for an affiliate that received a person later erased,
the SHA-256 it already holds, so its suppression feed still tells it to delete them.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seal_seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("chain_hash", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_events_seal_seq", ["seal_seq"])
    with op.batch_alter_table("affiliate_shares", schema=None) as batch_op:
        batch_op.add_column(sa.Column("erased_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("affiliate_shares", schema=None) as batch_op:
        batch_op.drop_column("erased_digest")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_events_seal_seq", type_="unique")
        batch_op.drop_column("chain_hash")
        batch_op.drop_column("seal_seq")
