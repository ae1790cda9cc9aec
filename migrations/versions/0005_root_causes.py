"""Audits say what changed: roots, echoes, words and unlisted drift; baselines keep a vector sample.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Why: the per-concept KS tests flag a cause and its echoes alike, and miss a shift that no concept
of the bank names. Root causes and the test on the aligned vectors themselves need the joint
structure of the baseline, which the per-concept sorted scores do not keep, so a baseline now
stores a uniform sample of its aligned vectors (``vectors``, float32 bytes, ``n_vectors`` rows;
NULL for baselines built before, which audits then sample from their batches). An audit stores
its explanation (roots, echoes, vector test, unlisted drift, decoded words) as JSON and the
unexplained part of its drift direction as a vector, for decoding and suggestions.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('baseline', sa.Column('vectors', sa.LargeBinary(), nullable=True,
                                        comment='a uniform sample of the aligned vectors, float32 (n_vectors, dim), '
                                                'for root causes'))
    op.add_column('baseline', sa.Column('n_vectors', sa.Integer(), nullable=True))
    op.add_column('audit', sa.Column('explanation', postgresql.JSONB(astext_type=sa.Text()),
                                     server_default=sa.text("'{}'::jsonb"), nullable=False,
                                     comment='roots, echoes, vector test, unlisted drift, words'))
    op.add_column('audit', sa.Column('residual', Vector(), nullable=True,
                                     comment='the part of the drift direction the roots do not explain'))
    op.create_check_constraint(op.f('ck_audit_residual_dim'), 'audit',
                               'residual IS NULL OR vector_dims(residual) = dim')


def downgrade() -> None:
    op.drop_constraint(op.f('ck_audit_residual_dim'), 'audit', type_='check')
    op.drop_column('audit', 'residual')
    op.drop_column('audit', 'explanation')
    op.drop_column('baseline', 'n_vectors')
    op.drop_column('baseline', 'vectors')
