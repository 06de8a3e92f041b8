"""deliveries: the claim's time kept apart from its lease renewals

``claimed_at`` was overwritten by every lease renewal, so nobody could tell when a row had
really been taken for sending (the bound of invariant 2 is stated against that moment).
Renewals now go to ``renewed_at``; a lease is alive while the later of the two is recent.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("renewed_at")
