"""signup_requests gain link_nonce: a confirmation link names its signup by id and nonce

The link carried only the row's id. SQLite gives a deleted newest row's id to the next row,
and erasure deletes a person's signups, so a link mailed to one person could confirm the
next person's signup. Now each row holds a random nonce that its link carries too.

Rows that exist when this runs get a random nonce their links never carried: links mailed
before the upgrade stop working (they expire within ``signup_link_seconds`` anyway, and the
person can sign up again), because such a row cannot show that it is the one its link was
mailed for.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signup_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link_nonce", sa.String(length=32), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        fill = "md5(random()::text || clock_timestamp()::text || id::text)"
    else:
        fill = "lower(hex(randomblob(16)))"
    op.execute(f"UPDATE signup_requests SET link_nonce = {fill}")
    with op.batch_alter_table("signup_requests", schema=None) as batch_op:
        batch_op.alter_column("link_nonce", existing_type=sa.String(length=32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("signup_requests", schema=None) as batch_op:
        batch_op.drop_column("link_nonce")
