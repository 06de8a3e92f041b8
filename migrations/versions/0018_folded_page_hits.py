"""storms: repeated page hits fold into one audit row with a count

``events.count`` is how many times the act happened (1 for every event but folded page hits),
``events.last_at`` when it was last seen (``occurred_at`` stays the first), and
``events.fold_key`` names the act, the caller and the time window a repeat folds into
(``suppression/events.py``); only rows that may still fold carry one.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("count", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch_op.add_column(sa.Column("last_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("fold_key", sa.String(length=64), nullable=True))
    op.create_index(
        "uq_events_fold_key",
        "events",
        ["fold_key"],
        unique=True,
        postgresql_where=sa.text("fold_key IS NOT NULL"),
        sqlite_where=sa.text("fold_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_events_fold_key", table_name="events")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("fold_key")
        batch_op.drop_column("last_at")
        batch_op.drop_column("count")
