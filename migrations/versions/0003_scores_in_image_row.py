"""Each image's scores against its batch's bank kept in the image row, not in image_score.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Why: storing a chunk wrote a second COPY into ``image_score``, one row per image with a primary
key index entry and two foreign-key lookups (image, concept_bank): about a quarter of the time of
a bulk store (issue 5's benchmark). The scores an image is ingested with all belong to one bank,
the bank of its batch, so they need no per-row key:

- ``batch.bank_id`` names the bank the batch was opened with (the monitor's bank then); one
  foreign key per batch instead of one per image. Nullable: a batch opened without one takes the
  bank of its first scored chunk (``store.images``).
- ``image.scores`` holds the image's scores against ``batch.bank_id``, in the bank's concept order;
  NULL for failed images (checked), and for ok images stored without scores.
- ``image_score`` keeps scores against any other bank: batches rescored after the monitor's bank
  changed (``audit.batch_scores``), or the rest of a batch resumed after such a change.

The data moves both ways: upgrade gives every batch its monitor's current bank and moves the
image_score rows of that bank into the image rows; downgrade moves ``image.scores`` back.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('batch', sa.Column('bank_id', sa.Integer(), nullable=True,
                                     comment="the bank image.scores are against"))
    op.create_foreign_key(op.f('fk_batch_bank_id_concept_bank'), 'batch', 'concept_bank', ['bank_id'], ['id'])
    op.add_column('image', sa.Column('scores', postgresql.ARRAY(sa.REAL()), nullable=True,
                                     comment="concept scores against batch.bank_id, in concept order"))
    op.execute("UPDATE batch b SET bank_id = m.bank_id FROM monitor m WHERE m.id = b.monitor_id")
    op.execute("UPDATE image i SET scores = s.scores FROM image_score s, batch b "
               "WHERE s.image_id = i.id AND b.id = i.batch_id AND s.bank_id = b.bank_id")
    op.execute("DELETE FROM image_score s USING image i, batch b "
               "WHERE s.image_id = i.id AND b.id = i.batch_id AND s.bank_id = b.bank_id")
    op.create_check_constraint(op.f('ck_image_failed_has_no_scores'), 'image',
                               "status = 'ok' OR scores IS NULL")


def downgrade() -> None:
    op.execute("INSERT INTO image_score (image_id, bank_id, scores) SELECT i.id, b.bank_id, i.scores "
               "FROM image i JOIN batch b ON b.id = i.batch_id "
               "WHERE i.scores IS NOT NULL AND b.bank_id IS NOT NULL ON CONFLICT DO NOTHING")
    op.drop_constraint(op.f('ck_image_failed_has_no_scores'), 'image', type_='check')
    op.drop_column('image', 'scores')
    op.drop_constraint(op.f('fk_batch_bank_id_concept_bank'), 'batch', type_='foreignkey')
    op.drop_column('batch', 'bank_id')
