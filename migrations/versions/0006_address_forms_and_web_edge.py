"""web edge: credential failure counts and tallies of refused recipient hits

``web_failures`` holds failed affiliate credential checks per IP network and per affiliate
in a fixed window, where every gunicorn worker sees them (a count in process memory would
let each worker grant its own budget). ``web_hit_tallies`` counts refused recipient hits
per network, route, outcome and minute, so garbage links add at most one audit event per
such key instead of one per request.

The address forms (issue 17) need no column: the address as given is already kept in
``contacts.submitted_address`` for every row, and the matching key in ``addresses.address``
is unchanged; delivery_address() derives what is mailed from the former.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_failures",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_web_failures")),
    )
    op.create_table(
        "web_hit_tallies",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("route", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "minute", "network", "route", "outcome", name=op.f("pk_web_hit_tallies")
        ),
    )


def downgrade() -> None:
    op.drop_table("web_hit_tallies")
    op.drop_table("web_failures")
