"""affiliates

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:24:50.633381
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('affiliates',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('contact_email', sa.String(length=254), nullable=False),
    sa.Column('fields', sa.JSON(), nullable=False),
    sa.Column('credential_hash', sa.String(length=300), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_affiliates')),
    sa.UniqueConstraint('name', name=op.f('uq_affiliates_name'))
    )
    op.create_table('affiliate_releases',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('affiliate_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('requested_by', sa.String(length=200), nullable=True),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('since', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['affiliate_id'], ['affiliates.id'], name=op.f('fk_affiliate_releases_affiliate_id_affiliates')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_affiliate_releases'))
    )
    with op.batch_alter_table('affiliate_releases', schema=None) as batch_op:
        batch_op.create_index('ix_affiliate_releases_affiliate', ['affiliate_id', 'created_at'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('affiliate_releases', schema=None) as batch_op:
        batch_op.drop_index('ix_affiliate_releases_affiliate')

    op.drop_table('affiliate_releases')
    op.drop_table('affiliates')

