"""Image rows cheaper to write in bulk: one foreign key to their batch, vectors kept in the row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Why: storing images by binary COPY spent most of its time on per-row work inside PostgreSQL
(issue 5's benchmark, 512-d vectors). Two changes remove part of it without losing a guarantee:

- ``image.monitor_id`` and ``image.batch_id`` each had a foreign key, so every row ran two
  referential lookups, and nothing checked that an image's monitor is its batch's monitor. One
  foreign key on (batch_id, monitor_id) to batch (id, monitor_id) does one lookup, enforces that
  agreement, and deleting a monitor still reaches its images through its batches.
- pgvector stores vectors uncompressed and lets PostgreSQL move them out of line; a 512-d vector
  (2,056 bytes) is just over the default 2 kB threshold, so every image also went to the TOAST
  table and its index, and every read of a vector took a second lookup. ``toast_tuple_target`` at
  its maximum keeps rows that fit a page whole; only the widest vectors (near 2,000-d) move out.
  Rows already stored move in when rewritten (``VACUUM FULL image`` if wanted), not by this
  revision.
"""
from __future__ import annotations

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_unique_constraint(op.f('uq_batch_id_monitor_id'), 'batch', ['id', 'monitor_id'])
    op.drop_constraint('fk_image_monitor_id_monitor', 'image', type_='foreignkey')
    op.drop_constraint('fk_image_batch_id_batch', 'image', type_='foreignkey')
    op.create_foreign_key(
        op.f('fk_image_batch_id_batch'), 'image', 'batch', ['batch_id', 'monitor_id'], ['id', 'monitor_id'],
        ondelete='CASCADE',
    )
    op.execute("ALTER TABLE image SET (toast_tuple_target = 8160)")


def downgrade() -> None:
    op.execute("ALTER TABLE image RESET (toast_tuple_target)")
    op.drop_constraint('fk_image_batch_id_batch', 'image', type_='foreignkey')
    op.create_foreign_key(
        op.f('fk_image_batch_id_batch'), 'image', 'batch', ['batch_id'], ['id'], ondelete='CASCADE'
    )
    op.create_foreign_key(
        op.f('fk_image_monitor_id_monitor'), 'image', 'monitor', ['monitor_id'], ['id'], ondelete='CASCADE'
    )
    op.drop_constraint(op.f('uq_batch_id_monitor_id'), 'batch', type_='unique')
