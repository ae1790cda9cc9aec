"""An audit that fails is stored as ``failed`` with its error, even before a baseline exists.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Why: scheduled audits run unattended (``t2c serve``). One that fails (no baseline built yet, no
batch in its window, the database or a model file gone) must be visible as failed in t2c, not
only in Prefect's UI, so the people on call see it beside the audits that worked. Such an audit
may have no baseline and no drift direction, so ``audit.baseline_id`` and ``audit.dim`` become
nullable; an audit that is ``done`` still has both (checked).
"""
from __future__ import annotations

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column('audit', 'baseline_id', nullable=True)
    op.alter_column('audit', 'dim', nullable=True)
    op.create_check_constraint(op.f('ck_audit_done_has_baseline'), 'audit',
                               "status <> 'done' OR (baseline_id IS NOT NULL AND dim IS NOT NULL)")


def downgrade() -> None:
    op.execute("DELETE FROM audit WHERE baseline_id IS NULL OR dim IS NULL")
    op.drop_constraint(op.f('ck_audit_done_has_baseline'), 'audit', type_='check')
    op.alter_column('audit', 'dim', nullable=False)
    op.alter_column('audit', 'baseline_id', nullable=False)
