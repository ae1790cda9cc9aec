"""Alerts that belong to a monitor, not only to an audit: "no data" alerts.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

Why: a camera feed that stops is the failure a monitoring service must not miss, and it has no
audit to hang an alert on (there is nothing to audit). Alerts now name their monitor
(``monitor_id``, filled from their audit for the existing rows) and their ``kind``: ``drift`` (of an
audit, which it still names) or ``no_data`` (of a monitor that has stored no batch for longer than
its ``alerts.no_data_after``). The quiet period, retries and `t2c alerts retry` treat both alike.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('alert', sa.Column('monitor_id', sa.Integer(), nullable=True))
    op.execute("UPDATE alert al SET monitor_id = a.monitor_id FROM audit a WHERE a.id = al.audit_id")
    op.alter_column('alert', 'monitor_id', nullable=False)
    op.create_foreign_key(op.f('fk_alert_monitor_id_monitor'), 'alert', 'monitor', ['monitor_id'], ['id'],
                          ondelete='CASCADE')
    op.create_index(op.f('ix_alert_monitor_id'), 'alert', ['monitor_id'], unique=False)
    op.add_column('alert', sa.Column('kind', sa.String(length=20), server_default='drift', nullable=False,
                                     comment="drift (of an audit) or no_data (a monitor that stored nothing)"))
    op.create_check_constraint('kind', 'alert', "kind IN ('drift', 'no_data')")
    op.alter_column('alert', 'audit_id', nullable=True)
    op.create_check_constraint('drift_has_audit', 'alert', "kind = 'no_data' OR audit_id IS NOT NULL")


def downgrade() -> None:
    op.drop_constraint(op.f('ck_alert_drift_has_audit'), 'alert', type_='check')
    op.execute("DELETE FROM alert WHERE audit_id IS NULL")  # no_data alerts had no place before this revision
    op.alter_column('alert', 'audit_id', nullable=False)
    op.drop_constraint(op.f('ck_alert_kind'), 'alert', type_='check')
    op.drop_column('alert', 'kind')
    op.drop_index(op.f('ix_alert_monitor_id'), table_name='alert')
    op.drop_constraint(op.f('fk_alert_monitor_id_monitor'), 'alert', type_='foreignkey')
    op.drop_column('alert', 'monitor_id')
