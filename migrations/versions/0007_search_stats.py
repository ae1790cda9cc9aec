"""Concept-logic search caches each concept's similarity statistics per corpus.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

Why: a concept-logic query (``t2c search``) thresholds each concept at its mean plus or minus k
standard deviations over the searched corpus. Computing them costs a scan of the corpus; they
are kept per corpus and query vector with the corpus's fingerprint (count and highest image id),
so a repeated or refined query over an unchanged corpus scans once, not twice.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'search_stat',
        sa.Column('corpus_key', sa.String(length=64), nullable=False, comment='sha256 of the corpus filters'),
        sa.Column('vector_key', sa.String(length=64), nullable=False, comment='sha256 of the float32 vector'),
        sa.Column('monitor_id', sa.Integer(), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False, comment='images in the corpus when computed'),
        sa.Column('max_image_id', sa.BigInteger(), nullable=False,
                  comment="the corpus's highest image id when computed"),
        sa.Column('mean', sa.Float(), nullable=False),
        sa.Column('std', sa.Float(), nullable=False, comment='population standard deviation'),
        sa.Column('computed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['monitor_id'], ['monitor.id'], name=op.f('fk_search_stat_monitor_id_monitor'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('corpus_key', 'vector_key', name=op.f('pk_search_stat')),
    )
    op.create_index(op.f('ix_search_stat_monitor_id'), 'search_stat', ['monitor_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_search_stat_monitor_id'), table_name='search_stat')
    op.drop_table('search_stat')
