"""campaigns gain fanning_out: the first batches send while the fan-out adds the rest

The fan-out added every delivery row of a campaign in one transaction before the first batch
was published: ten million recipients kept every worker idle for about 280 s, twenty thousand
for half a second of a six-second send. Now it adds a range of contacts at a time, each range
committed and its batches published at once, the ranges growing from one batch's worth.
``fanning_out`` is true while ranges remain: the campaign cannot be finished before it has
every row, and a fan-out that stopped half-way (a crash, a pause) is continued. Campaigns
that exist when this runs were fanned out whole, so it starts false.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-01 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("fanning_out", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("fanning_out")
