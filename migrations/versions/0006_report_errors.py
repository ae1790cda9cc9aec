"""An audit whose report could not be written says why, and the report job writes it later.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Why: a report directory that is full, read-only or missing must not lose the audit or stop its
alerts. The audit is stored first; when its report cannot be written (after the task's retries)
the error is kept on the audit (``report_error``), the alert goes out without a report, and the
periodic report job (``decode_report``) writes it once the directory works again.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('audit', sa.Column('report_error', sa.Text(), nullable=True,
                                     comment='why the report could not be written (cleared once it is)'))


def downgrade() -> None:
    op.drop_column('audit', 'report_error')
