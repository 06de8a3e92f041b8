"""consent_states: one foreign key to its own ledger row (address, scope and id)

A state named its address and its ledger row with two foreign keys, each checked per row
written (an import of a million rows writes over a million states). One composite key to
``consents (address_id, scope, id)`` says more with one check: the ledger row exists, and it
is a word of this state's own address and scope (the two keys let a state point at another
address's row); the address exists because the ledger row's own key says so. The unique index
it needs, ``(address_id, scope, id)``, takes the place of ``(address_id, scope, occurred_at)``:
every query of the ledger names an address (and mostly a scope), whose few rows it reads.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consents") as batch_op:
        batch_op.drop_index("ix_consents_address_scope")
        batch_op.create_index(
            "uq_consents_address_id_scope_id", ["address_id", "scope", "id"], unique=True
        )
    with op.batch_alter_table("consent_states") as batch_op:
        batch_op.drop_constraint("fk_consent_states_address_id_addresses", type_="foreignkey")
        batch_op.drop_constraint("fk_consent_states_consent_id_consents", type_="foreignkey")
        batch_op.create_foreign_key(
            "fk_consent_states_address_id_consents",
            "consents",
            ["address_id", "scope", "consent_id"],
            ["address_id", "scope", "id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("consent_states") as batch_op:
        batch_op.drop_constraint("fk_consent_states_address_id_consents", type_="foreignkey")
        batch_op.create_foreign_key(
            "fk_consent_states_address_id_addresses", "addresses", ["address_id"], ["id"]
        )
        batch_op.create_foreign_key(
            "fk_consent_states_consent_id_consents", "consents", ["consent_id"], ["id"]
        )
    with op.batch_alter_table("consents") as batch_op:
        batch_op.drop_index("uq_consents_address_id_scope_id")
        batch_op.create_index(
            "ix_consents_address_scope", ["address_id", "scope", "occurred_at"], unique=False
        )
