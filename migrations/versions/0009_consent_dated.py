"""consent: whether the source gave the time of a consent change

An imported row without ``consent_at`` is recorded at the time of the import, but the rule
"when a time is missing, opted_out wins" needs to know that the time was not given: an undated
opt-in loses to any opt-out. Existing rows carried real times (or the import time, which is
what they keep meaning), so they are marked dated.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("consents", "consent_states"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("dated", sa.Boolean(), server_default=sa.true(), nullable=False)
            )


def downgrade() -> None:
    for table in ("consent_states", "consents"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("dated")
