"""Initial schema: models, aligners, concept banks, monitors, batches, images, baselines, audits.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Why: everything the service stores, as DESIGN.md section 3 lays out: the encoders and CLIP models
whose spaces vectors live in, aligners between them, versioned concept banks, monitors, ingested
batches and images with their aligned vectors and concept scores, baselines, audits with their
per-concept results, alerts and reports.

Vectors of several dimensions: CLIP models differ in width (512, 768, 1024, ...), and one
deployment may watch monitors of several widths. Every vector column is the *untyped* pgvector
``vector`` with the width recorded beside it (``dim``) and a CHECK that ``vector_dims`` agrees,
instead of a typed ``vector(d)`` table per monitor (DDL at run time, one table per width) or a fixed
maximum padded with zeros (wasted space, and cosine distances of padded vectors are only right if
every reader remembers the padding). Similarity search over a width uses a per-width partial HNSW
index on ``(embedding::vector(d)) WHERE dim = d``, built after bulk loads at run time, which is the
approach pgvector documents for mixed dimensions; such indexes are named ``hnsw_*`` and ignored by
autogenerate.

Score arrays are ``real[]`` per image per bank (concept order = ``concept.position``): one row per
image instead of one per (image, concept) keeps a 1000-concept bank at one row per image.
"""
from __future__ import annotations

import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('clip_model',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=500), nullable=False, comment='open_clip model name or config path'),
    sa.Column('pretrained', sa.String(length=1000), nullable=True, comment='pretrained tag or checkpoint path'),
    sa.Column('weights_sha256', sa.String(length=64), nullable=False),
    sa.Column('embed_dim', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clip_model')),
    sa.UniqueConstraint('name', 'weights_sha256', name=op.f('uq_clip_model_name_weights_sha256'))
    )
    op.create_table('encoder',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=500), nullable=False, comment='timm model name or path'),
    sa.Column('weights_ref', sa.String(length=1000), nullable=True, comment='hub tag or local weights file'),
    sa.Column('weights_sha256', sa.String(length=64), nullable=False),
    sa.Column('feature_dim', sa.Integer(), nullable=False),
    sa.Column('preprocess', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_encoder')),
    sa.UniqueConstraint('name', 'weights_sha256', name=op.f('uq_encoder_name_weights_sha256'))
    )
    op.create_table('aligner',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('encoder_id', sa.Integer(), nullable=False),
    sa.Column('clip_model_id', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=50), nullable=False),
    sa.Column('d_in', sa.Integer(), nullable=False),
    sa.Column('d_out', sa.Integer(), nullable=False),
    sa.Column('weights', sa.LargeBinary(), nullable=True, comment='safetensors bytes of W and b'),
    sa.Column('path', sa.String(length=1000), nullable=True),
    sa.Column('metrics', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['clip_model_id'], ['clip_model.id'], name=op.f('fk_aligner_clip_model_id_clip_model')),
    sa.ForeignKeyConstraint(['encoder_id'], ['encoder.id'], name=op.f('fk_aligner_encoder_id_encoder')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_aligner'))
    )
    op.create_index(op.f('ix_aligner_clip_model_id'), 'aligner', ['clip_model_id'], unique=False)
    op.create_index(op.f('ix_aligner_encoder_id'), 'aligner', ['encoder_id'], unique=False)
    op.create_table('concept_bank',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('clip_model_id', sa.Integer(), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('templates', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['clip_model_id'], ['clip_model.id'], name=op.f('fk_concept_bank_clip_model_id_clip_model')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_concept_bank')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_concept_bank_name_version'))
    )
    op.create_index(op.f('ix_concept_bank_clip_model_id'), 'concept_bank', ['clip_model_id'], unique=False)
    op.create_table('concept',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('bank_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False, comment='column index in score arrays'),
    sa.Column('name', sa.String(length=500), nullable=False),
    sa.Column('phrasings', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('vector', pgvector.sqlalchemy.vector.VECTOR(), nullable=False),
    sa.ForeignKeyConstraint(['bank_id'], ['concept_bank.id'], name=op.f('fk_concept_bank_id_concept_bank'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_concept')),
    sa.UniqueConstraint('bank_id', 'name', name=op.f('uq_concept_bank_id_name')),
    sa.UniqueConstraint('bank_id', 'position', name=op.f('uq_concept_bank_id_position'))
    )
    op.create_table('monitor',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('encoder_id', sa.Integer(), nullable=False),
    sa.Column('clip_model_id', sa.Integer(), nullable=False),
    sa.Column('aligner_id', sa.Integer(), nullable=False),
    sa.Column('bank_id', sa.Integer(), nullable=False),
    sa.Column('config', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False, comment='schedules, alert channels, thresholds (no secrets)'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['aligner_id'], ['aligner.id'], name=op.f('fk_monitor_aligner_id_aligner')),
    sa.ForeignKeyConstraint(['bank_id'], ['concept_bank.id'], name=op.f('fk_monitor_bank_id_concept_bank')),
    sa.ForeignKeyConstraint(['clip_model_id'], ['clip_model.id'], name=op.f('fk_monitor_clip_model_id_clip_model')),
    sa.ForeignKeyConstraint(['encoder_id'], ['encoder.id'], name=op.f('fk_monitor_encoder_id_encoder')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_monitor')),
    sa.UniqueConstraint('name', name=op.f('uq_monitor_name'))
    )
    op.create_index(op.f('ix_monitor_aligner_id'), 'monitor', ['aligner_id'], unique=False)
    op.create_index(op.f('ix_monitor_bank_id'), 'monitor', ['bank_id'], unique=False)
    op.create_index(op.f('ix_monitor_clip_model_id'), 'monitor', ['clip_model_id'], unique=False)
    op.create_index(op.f('ix_monitor_encoder_id'), 'monitor', ['encoder_id'], unique=False)
    op.create_table('baseline',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('monitor_id', sa.Integer(), nullable=False),
    sa.Column('aligner_id', sa.Integer(), nullable=False),
    sa.Column('bank_id', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('batch_ids', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('n_images', sa.Integer(), nullable=False),
    sa.Column('reservoir_size', sa.Integer(), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('mean_vector', pgvector.sqlalchemy.vector.VECTOR(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('mean_vector IS NULL OR vector_dims(mean_vector) = dim', name=op.f('ck_baseline_mean_vector_dim')),
    sa.ForeignKeyConstraint(['aligner_id'], ['aligner.id'], name=op.f('fk_baseline_aligner_id_aligner')),
    sa.ForeignKeyConstraint(['bank_id'], ['concept_bank.id'], name=op.f('fk_baseline_bank_id_concept_bank')),
    sa.ForeignKeyConstraint(['monitor_id'], ['monitor.id'], name=op.f('fk_baseline_monitor_id_monitor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_baseline'))
    )
    op.create_index(op.f('ix_baseline_monitor_id'), 'baseline', ['monitor_id'], unique=False)
    op.create_index('uq_baseline_monitor_id_active', 'baseline', ['monitor_id'], unique=True, postgresql_where=sa.text('active'))
    op.create_table('batch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('monitor_id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=200), nullable=False, comment='given, or derived from the content'),
    sa.Column('source_uri', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='pending', nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('n_images', sa.Integer(), server_default='0', nullable=False),
    sa.Column('n_ok', sa.Integer(), server_default='0', nullable=False),
    sa.Column('n_failed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('timings', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False, comment='seconds per stage'),
    sa.Column('error', sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'embedding', 'stored', 'failed')", name=op.f('ck_batch_status')),
    sa.ForeignKeyConstraint(['monitor_id'], ['monitor.id'], name=op.f('fk_batch_monitor_id_monitor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch')),
    sa.UniqueConstraint('monitor_id', 'external_id', name=op.f('uq_batch_monitor_id_external_id'))
    )
    op.create_table('audit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('monitor_id', sa.Integer(), nullable=False),
    sa.Column('baseline_id', sa.Integer(), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('batch_ids', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('n_current', sa.Integer(), server_default='0', nullable=False),
    sa.Column('status', sa.String(length=10), server_default='running', nullable=False),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('n_flagged', sa.Integer(), server_default='0', nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('direction', pgvector.sqlalchemy.vector.VECTOR(), nullable=True, comment='window mean minus baseline mean of aligned vectors'),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('running', 'done', 'failed')", name=op.f('ck_audit_status')),
    sa.CheckConstraint('direction IS NULL OR vector_dims(direction) = dim', name=op.f('ck_audit_direction_dim')),
    sa.ForeignKeyConstraint(['baseline_id'], ['baseline.id'], name=op.f('fk_audit_baseline_id_baseline'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['monitor_id'], ['monitor.id'], name=op.f('fk_audit_monitor_id_monitor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit'))
    )
    op.create_index(op.f('ix_audit_baseline_id'), 'audit', ['baseline_id'], unique=False)
    op.create_index('ix_audit_monitor_id_started_at', 'audit', ['monitor_id', 'started_at'], unique=False)
    op.create_table('baseline_concept',
    sa.Column('baseline_id', sa.Integer(), nullable=False),
    sa.Column('concept_id', sa.Integer(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False, comment='scores seen; the sample may hold fewer'),
    sa.Column('scores', postgresql.ARRAY(sa.REAL()), nullable=False),
    sa.ForeignKeyConstraint(['baseline_id'], ['baseline.id'], name=op.f('fk_baseline_concept_baseline_id_baseline'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['concept_id'], ['concept.id'], name=op.f('fk_baseline_concept_concept_id_concept'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('baseline_id', 'concept_id', name=op.f('pk_baseline_concept'))
    )
    op.create_table('image',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('monitor_id', sa.Integer(), nullable=False),
    sa.Column('uri', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('n_bytes', sa.BigInteger(), nullable=True),
    sa.Column('meta', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('captured_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('dim', sa.Integer(), nullable=True),
    sa.Column('embedding', pgvector.sqlalchemy.vector.VECTOR(), nullable=True, comment='unit-norm aligned vector'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(status = 'ok') = (embedding IS NOT NULL AND failure_reason IS NULL)", name=op.f('ck_image_ok_has_embedding')),
    sa.CheckConstraint("status IN ('ok', 'failed')", name=op.f('ck_image_status')),
    sa.CheckConstraint('embedding IS NULL OR vector_dims(embedding) = dim', name=op.f('ck_image_embedding_dim')),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_image_batch_id_batch'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['monitor_id'], ['monitor.id'], name=op.f('fk_image_monitor_id_monitor'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_image')),
    sa.UniqueConstraint('batch_id', 'uri', name=op.f('uq_image_batch_id_uri'))
    )
    op.create_index('ix_image_monitor_id_created_at', 'image', ['monitor_id', 'created_at'], unique=False)
    op.create_index('uq_image_batch_id_sha256_ok', 'image', ['batch_id', 'sha256'], unique=True, postgresql_where=sa.text("status = 'ok'"))
    op.create_table('alert',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('audit_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=200), nullable=False, comment='channel name; never the secret'),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'suppressed')", name=op.f('ck_alert_status')),
    sa.ForeignKeyConstraint(['audit_id'], ['audit.id'], name=op.f('fk_alert_audit_id_audit'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert'))
    )
    op.create_index(op.f('ix_alert_audit_id'), 'alert', ['audit_id'], unique=False)
    op.create_table('audit_result',
    sa.Column('audit_id', sa.Integer(), nullable=False),
    sa.Column('concept_id', sa.Integer(), nullable=False),
    sa.Column('ks_stat', sa.Float(), nullable=False),
    sa.Column('p_value', sa.Float(), nullable=False),
    sa.Column('q_value', sa.Float(), nullable=False, comment='p corrected for multiple testing'),
    sa.Column('effect', sa.Float(), nullable=False, comment='window mean score minus baseline mean score'),
    sa.Column('direction', sa.SmallInteger(), nullable=False, comment='+1 more of the concept, -1 less'),
    sa.Column('flagged', sa.Boolean(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=True, comment='1 = largest effect among flagged'),
    sa.ForeignKeyConstraint(['audit_id'], ['audit.id'], name=op.f('fk_audit_result_audit_id_audit'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['concept_id'], ['concept.id'], name=op.f('fk_audit_result_concept_id_concept'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('audit_id', 'concept_id', name=op.f('pk_audit_result'))
    )
    op.create_table('image_score',
    sa.Column('image_id', sa.BigInteger(), nullable=False),
    sa.Column('bank_id', sa.Integer(), nullable=False),
    sa.Column('scores', postgresql.ARRAY(sa.REAL()), nullable=False),
    sa.ForeignKeyConstraint(['bank_id'], ['concept_bank.id'], name=op.f('fk_image_score_bank_id_concept_bank'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], name=op.f('fk_image_score_image_id_image'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id', 'bank_id', name=op.f('pk_image_score'))
    )
    op.create_table('report',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('audit_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('decoded', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['audit_id'], ['audit.id'], name=op.f('fk_report_audit_id_audit'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report'))
    )
    op.create_index(op.f('ix_report_audit_id'), 'report', ['audit_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_report_audit_id'), table_name='report')
    op.drop_table('report')
    op.drop_table('image_score')
    op.drop_table('audit_result')
    op.drop_index(op.f('ix_alert_audit_id'), table_name='alert')
    op.drop_table('alert')
    op.drop_index('uq_image_batch_id_sha256_ok', table_name='image', postgresql_where=sa.text("status = 'ok'"))
    op.drop_index('ix_image_monitor_id_created_at', table_name='image')
    op.drop_table('image')
    op.drop_table('baseline_concept')
    op.drop_index('ix_audit_monitor_id_started_at', table_name='audit')
    op.drop_index(op.f('ix_audit_baseline_id'), table_name='audit')
    op.drop_table('audit')
    op.drop_table('batch')
    op.drop_index('uq_baseline_monitor_id_active', table_name='baseline', postgresql_where=sa.text('active'))
    op.drop_index(op.f('ix_baseline_monitor_id'), table_name='baseline')
    op.drop_table('baseline')
    op.drop_index(op.f('ix_monitor_encoder_id'), table_name='monitor')
    op.drop_index(op.f('ix_monitor_clip_model_id'), table_name='monitor')
    op.drop_index(op.f('ix_monitor_bank_id'), table_name='monitor')
    op.drop_index(op.f('ix_monitor_aligner_id'), table_name='monitor')
    op.drop_table('monitor')
    op.drop_table('concept')
    op.drop_index(op.f('ix_concept_bank_clip_model_id'), table_name='concept_bank')
    op.drop_table('concept_bank')
    op.drop_index(op.f('ix_aligner_encoder_id'), table_name='aligner')
    op.drop_index(op.f('ix_aligner_clip_model_id'), table_name='aligner')
    op.drop_table('aligner')
    op.drop_table('encoder')
    op.drop_table('clip_model')
