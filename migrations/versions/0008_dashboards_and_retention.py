"""Indexes for the dashboards' time ranges, and retention of image vectors.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Why: the Grafana dashboards filter batches and alerts on a time range (``$__timeFilter``); on a
year of data a scan of either table per panel refresh is wasted work, so both get an index on their
time column (batches per monitor, as the panels ask). Retention (``t2c retention apply``) drops the
vectors of old images to bound the database while their scores, batches and audits stay: an image
whose vector was dropped is still ``ok`` (it was embedded and scored), and ``embedding_dropped_at``
says when its vector went, so the check that an ok image has a vector allows that one case.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

OLD_CHECK = "(status = 'ok') = (embedding IS NOT NULL AND failure_reason IS NULL)"
NEW_CHECK = ("(status = 'ok') = ((embedding IS NOT NULL OR embedding_dropped_at IS NOT NULL) "
             "AND failure_reason IS NULL)")


def upgrade() -> None:
    op.create_index('ix_batch_monitor_id_received_at', 'batch', ['monitor_id', 'received_at'], unique=False,
                    if_not_exists=True)
    op.create_index('ix_alert_created_at', 'alert', ['created_at'], unique=False, if_not_exists=True)
    op.add_column('image', sa.Column('embedding_dropped_at', sa.DateTime(timezone=True), nullable=True,
                                     comment='when retention dropped the vector (scores stay)'))
    op.drop_constraint(op.f('ck_image_ok_has_embedding'), 'image', type_='check')
    op.create_check_constraint('ok_has_embedding', 'image', NEW_CHECK)


def downgrade() -> None:
    op.drop_constraint(op.f('ck_image_ok_has_embedding'), 'image', type_='check')
    # images whose vector retention dropped cannot satisfy the old check: they are deleted, as they
    # could not have been stored before this revision
    op.execute("DELETE FROM image WHERE embedding_dropped_at IS NOT NULL")
    op.create_check_constraint('ok_has_embedding', 'image', OLD_CHECK)
    op.drop_column('image', 'embedding_dropped_at')
    op.drop_index('ix_alert_created_at', table_name='alert')
    op.drop_index('ix_batch_monitor_id_received_at', table_name='batch')
