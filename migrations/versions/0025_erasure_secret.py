"""erasure_secret: the key of the erased-address hashes, wrapped under the signing keys

Erased addresses were hashed under the newest signing key and recognised under the keys
still listed; the documented rotation retires a key after a year, and with it every erasure
made under it: the person could be imported and mailed again. The hashes now use one secret
that each signing key wraps; a key added to the list wraps it while an older one can still
open it. The table starts empty: the first process that needs it writes the secret, taken
from its newest key so that erasures already hashed under that key stay recognised.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-02 07:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erasure_secret",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wraps", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasure_secret")),
    )


def downgrade() -> None:
    op.drop_table("erasure_secret")
