"""repeated soft bounces get their own suppression reason

Until now ``soft_bounce_limit`` soft bounces within ``soft_bounce_days`` suppressed with reason
``hard_bounce`` (source ``inbound:…:soft_bounces``). They become ``repeated_soft_bounce`` so
staff can tell a full mailbox from a dead one. The reason column is a plain string, so only
existing rows change. Downgrade turns them back into ``hard_bounce``; where the address also
has an active ``hard_bounce`` in the same scope (the unique index allows one), the soft one is
marked lifted instead of colliding, since the hard one already blocks the same mail.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE suppressions SET reason = 'repeated_soft_bounce'"
            " WHERE reason = 'hard_bounce' AND source LIKE :made_by"
        ).bindparams(made_by="inbound:%:soft_bounces")
    )


def downgrade() -> None:
    op.execute(
        "UPDATE suppressions SET lifted_at = created_at, lifted_by = 'migration 0015',"
        " lift_reason = 'downgrade: an active hard_bounce suppression already covers it'"
        " WHERE reason = 'repeated_soft_bounce' AND lifted_at IS NULL AND EXISTS ("
        "  SELECT 1 FROM suppressions AS h WHERE h.address_id = suppressions.address_id"
        "  AND h.scope = suppressions.scope AND h.reason = 'hard_bounce'"
        "  AND h.lifted_at IS NULL)"
    )
    op.execute(
        "UPDATE suppressions SET reason = 'hard_bounce' WHERE reason = 'repeated_soft_bounce'"
    )
