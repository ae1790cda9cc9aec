"""What happened to a monitor in a period, for the report job's digest: audits, alerts, ingest health."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from t2c_monitor.store.models import Alert, Audit, AuditResult, Batch, Concept, Image, Report


@dataclass(frozen=True)
class PeriodAudit:
    id: int
    status: str
    started_at: datetime
    batches: list[str]
    n_current: int
    explanation: dict[str, Any]
    flagged: list[dict[str, Any]]  # {"name", "direction"} by rank
    error: str | None
    report: str | None


def audits_between(conn: Connection, monitor_id: int, since: datetime, until: datetime) -> list[PeriodAudit]:
    """The monitor's audits started in [since, until), oldest first, with their flagged concepts."""
    rows = conn.execute(
        select(Audit.id, Audit.status, Audit.started_at, Audit.batch_ids, Audit.n_current, Audit.explanation,
               Audit.error)
        .where(Audit.monitor_id == monitor_id, Audit.started_at >= since, Audit.started_at < until)
        .order_by(Audit.started_at, Audit.id)).all()
    ids = [r.id for r in rows]
    flagged: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    reports: dict[int, str] = {}
    if ids:
        for f in conn.execute(select(AuditResult.audit_id, Concept.name, AuditResult.direction)
                              .join(Concept, Concept.id == AuditResult.concept_id)
                              .where(AuditResult.audit_id.in_(ids), AuditResult.flagged)
                              .order_by(AuditResult.audit_id, AuditResult.rank)):
            flagged[f.audit_id].append({"name": f.name, "direction": int(f.direction)})
        reports = dict(conn.execute(select(Report.audit_id, func.max(Report.path))
                                    .where(Report.audit_id.in_(ids)).group_by(Report.audit_id)).all())
    wanted = {int(b) for r in rows for b in r.batch_ids}
    names = dict(conn.execute(select(Batch.id, Batch.external_id).where(Batch.id.in_(wanted))).all()) if wanted else {}
    return [PeriodAudit(id=r.id, status=r.status, started_at=r.started_at,
                        batches=[names.get(int(b), str(b)) for b in r.batch_ids], n_current=r.n_current,
                        explanation=dict(r.explanation or {}), flagged=flagged[r.id], error=r.error,
                        report=reports.get(r.id)) for r in rows]


def alert_counts(conn: Connection, monitor_id: int, since: datetime, until: datetime) -> dict[str, int]:
    """Alerts of the monitor's audits created in the period, by status (sent, suppressed, failed, ...)."""
    rows = conn.execute(select(Alert.status, func.count())
                        .where(Alert.monitor_id == monitor_id, Alert.created_at >= since, Alert.created_at < until)
                        .group_by(Alert.status)).all()
    return {str(s): int(n) for s, n in rows}


def batch_counts(conn: Connection, monitor_id: int, since: datetime, until: datetime) -> dict[str, int]:
    """Batches received in the period, by status (stored, failed, pending: unfinished)."""
    rows = conn.execute(select(Batch.status, func.count())
                        .where(Batch.monitor_id == monitor_id, Batch.received_at >= since, Batch.received_at < until)
                        .group_by(Batch.status)).all()
    return {str(s): int(n) for s, n in rows}


def image_counts(conn: Connection, monitor_id: int, since: datetime, until: datetime) -> dict[str, int]:
    """Images stored in the period, by status (ok, failed)."""
    rows = conn.execute(select(Image.status, func.count())
                        .where(Image.monitor_id == monitor_id, Image.created_at >= since, Image.created_at < until)
                        .group_by(Image.status)).all()
    return {str(s): int(n) for s, n in rows}


def failure_reasons(conn: Connection, monitor_id: int, since: datetime, until: datetime) -> list[tuple[str, int]]:
    """Why images failed in the period: (reason, count), commonest first."""
    rows = conn.execute(select(Image.failure_reason, func.count())
                        .where(Image.monitor_id == monitor_id, Image.status == "failed",
                               Image.created_at >= since, Image.created_at < until)
                        .group_by(Image.failure_reason).order_by(func.count().desc()).limit(10)).all()
    return [(str(r or "unknown"), int(n)) for r, n in rows]
