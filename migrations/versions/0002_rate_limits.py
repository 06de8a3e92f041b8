"""rate limits

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:04:02.998246
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('rate_limits',
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('next_at', sa.Double(), nullable=False),
    sa.Column('last_cost', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_limits'))
    )



def downgrade() -> None:

    op.drop_table('rate_limits')

