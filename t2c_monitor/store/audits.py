"""Audits: which batches a window covers, the audits stored and their results (baselines: ``baselines.py``;
a batch's scores and vectors: ``scores.py``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, delete, func, insert, or_, select, text, update

from t2c_monitor.errors import ConfigError
from t2c_monitor.store.models import (
    Audit,
    AuditResult,
    AuditStatus,
    Baseline,
    Batch,
    Concept,
    Image,
    Monitor,
    Report,
)


def stored_batches(conn: Connection, monitor_id: int, *, external_ids: list[str] | None = None,
                   last: int | None = None, since: datetime | None = None,
                   until: datetime | None = None) -> list[tuple[int, str]]:
    """(id, external id) of the monitor's stored batches: the named ones, the ``last`` K, or those
    received in [since, until); oldest first."""
    query = select(Batch.id, Batch.external_id).where(Batch.monitor_id == monitor_id, Batch.status == "stored")
    if external_ids is not None:
        query = query.where(Batch.external_id.in_(list(external_ids)))
    if since is not None:
        query = query.where(Batch.received_at >= since)
    if until is not None:
        query = query.where(Batch.received_at < until)
    rows = conn.execute(query.order_by(Batch.received_at.desc(), Batch.id.desc()).limit(last)).all()
    if external_ids is not None:
        missing = sorted(set(external_ids) - {r.external_id for r in rows})
        if missing:
            raise ConfigError(f"Batches not stored for this monitor: {', '.join(missing)}. "
                              "`t2c ingest` them first, or check the ids with the batch table.")
    return [(int(r.id), str(r.external_id)) for r in reversed(rows)]


def latest_batches(conn: Connection, monitor_id: int, *, last: int, min_images: int,
                   exclude: Sequence[int] = ()) -> list[tuple[int, str]]:
    """(id, external id) of the monitor's ``last`` K stored batches not in ``exclude``, reaching back over
    earlier ones while the newer hold fewer than ``min_images`` ok images; oldest first."""
    rows = conn.execute(text("""
        SELECT id, external_id FROM (
            SELECT id, external_id, received_at, row_number() OVER w AS k, sum(n_ok) OVER w - n_ok AS newer_images
            FROM batch WHERE monitor_id = :m AND status = 'stored' AND NOT (id = ANY(:exclude))
            WINDOW w AS (ORDER BY received_at DESC, id DESC)) t
        WHERE k <= :last OR newer_images < :min_images
        ORDER BY received_at, id"""), {"m": monitor_id, "exclude": list(exclude), "last": last,
                                       "min_images": min_images}).all()
    return [(int(r.id), str(r.external_id)) for r in rows]


@dataclass(frozen=True)
class AuditedWindow:
    """A completed audit that tested a given window."""

    audit_id: int
    finished_at: datetime


def audited_window(conn: Connection, monitor_id: int, baseline_id: int, batch_ids: Sequence[int],
                   params: dict[str, Any]) -> AuditedWindow | None:
    """The newest completed audit against this baseline of exactly these batches as they are now (the same
    set of ids and as many ok images: a batch that grew since is a new window) with these detector settings."""
    row = conn.execute(text(
        "SELECT a.id, a.finished_at FROM audit a WHERE a.monitor_id = :m AND a.baseline_id = :b AND a.status = 'done' "
        "AND a.batch_ids @> CAST(:ids AS jsonb) AND CAST(:ids AS jsonb) @> a.batch_ids "
        "AND a.params = CAST(:p AS jsonb) "
        "AND a.n_current = (SELECT coalesce(sum(n_ok), 0) FROM batch WHERE id = ANY(:id_list)) "
        "ORDER BY a.id DESC LIMIT 1"),
        {"m": monitor_id, "b": baseline_id, "ids": json.dumps([int(b) for b in batch_ids]),
         "id_list": [int(b) for b in batch_ids], "p": json.dumps(params)}).first()
    return None if row is None else AuditedWindow(int(row.id), row.finished_at)


def newest_batch(conn: Connection, monitor_id: int) -> tuple[str, datetime] | None:
    """(external id, received at) of the monitor's newest stored batch."""
    row = conn.execute(select(Batch.external_id, Batch.received_at)
                       .where(Batch.monitor_id == monitor_id, Batch.status == "stored")
                       .order_by(Batch.received_at.desc(), Batch.id.desc()).limit(1)).first()
    return None if row is None else (str(row.external_id), row.received_at)


def monitor_recorded_at(conn: Connection, monitor_id: int) -> datetime:
    """When the monitor was first recorded (`t2c monitor apply`; applying it again keeps this)."""
    return conn.execute(select(Monitor.created_at).where(Monitor.id == monitor_id)).scalar_one()


def stored_widths(conn: Connection, monitor_id: int) -> set[int]:
    """The widths of the aligned vectors stored for a monitor's images."""
    return set(conn.execute(select(Image.dim).where(Image.monitor_id == monitor_id, Image.status == "ok")
                            .distinct()).scalars())


def delete_monitor_data(conn: Connection, monitor_id: int) -> int:
    """Delete a monitor's batches with their images, scores, baselines and audits; returns the batches."""
    conn.execute(delete(Audit).where(Audit.monitor_id == monitor_id))
    conn.execute(delete(Baseline).where(Baseline.monitor_id == monitor_id))
    conn.execute(delete(Image).where(Image.monitor_id == monitor_id))
    return conn.execute(delete(Batch).where(Batch.monitor_id == monitor_id)).rowcount


def insert_audit(conn: Connection, *, monitor_id: int, baseline_id: int, batch_ids: list[int], n_current: int,
                 params: dict[str, Any], direction: np.ndarray, window: tuple[datetime | None, datetime | None],
                 results: Sequence[Any], concept_ids: list[int], explanation: dict[str, Any] | None = None,
                 residual: np.ndarray | None = None) -> int:
    """Store an audit, its per-concept results (``results``: ``drift.ConceptDrift`` in bank order) and
    its explanation (roots, echoes, vector test, words: JSON) with the unexplained ``residual``."""
    from t2c_monitor.store import copy

    audit_id = conn.execute(insert(Audit).values(
        monitor_id=monitor_id, baseline_id=baseline_id, window_start=window[0], window_end=window[1],
        batch_ids=list(batch_ids), n_current=n_current, status="done", params=params,
        n_flagged=sum(1 for r in results if r.flagged), dim=int(direction.shape[0]),
        direction=np.asarray(direction, dtype=np.float32) if np.any(direction) else None, finished_at=func.now(),
        explanation=explanation or {},
        residual=np.asarray(residual, dtype=np.float32) if residual is not None and np.any(residual) else None,
    ).returning(Audit.id)).scalar_one()
    copy.copy_into(conn, "audit_result", [
        copy.int_column("audit_id", [audit_id] * len(results)),
        copy.int_column("concept_id", concept_ids),
        copy.float_column("ks_stat", [r.ks_stat for r in results]),
        copy.float_column("p_value", [r.p_value for r in results]),
        copy.float_column("q_value", [r.q_value for r in results]),
        copy.float_column("effect", [r.effect for r in results]),
        copy.int_column("direction", [int(r.direction) for r in results], bits=16),
        copy.bool_column("flagged", [bool(r.flagged) for r in results]),
        copy.int_column("rank", [r.rank for r in results]),
    ])
    return int(audit_id)


@dataclass(frozen=True)
class ConceptHistoryRow:
    """One concept's line in one audit, as `t2c audit history` shows it."""

    audit_id: int
    started_at: datetime
    n_current: int
    ks_stat: float
    q_value: float
    effect: float
    direction: int
    flagged: bool
    rank: int | None


def concept_history(conn: Connection, monitor_id: int, concept: str, *, limit: int = 50) -> list[ConceptHistoryRow]:
    """A concept's KS statistic, effect and flag over the monitor's audits, oldest first."""
    rows = conn.execute(
        select(Audit.id.label("audit_id"), Audit.started_at, Audit.n_current, AuditResult.ks_stat,
               AuditResult.q_value, AuditResult.effect, AuditResult.direction, AuditResult.flagged, AuditResult.rank)
        .join(Audit, Audit.id == AuditResult.audit_id).join(Concept, Concept.id == AuditResult.concept_id)
        .where(Audit.monitor_id == monitor_id, func.lower(Concept.name) == concept.lower())
        .order_by(Audit.started_at.desc()).limit(limit)
    ).all()
    return [ConceptHistoryRow(**r._mapping) for r in reversed(rows)]


def delete_audits(conn: Connection, monitor_id: int) -> int:
    """Delete a monitor's audits (with their results, alerts and reports); returns how many."""
    return conn.execute(delete(Audit).where(Audit.monitor_id == monitor_id)).rowcount


def insert_failed_audit(conn: Connection, *, monitor_id: int, error: str, baseline_id: int | None = None,
                        batch_ids: list[int] | None = None,
                        window: tuple[datetime | None, datetime | None] = (None, None),
                        params: dict[str, Any] | None = None) -> int:
    """Record an audit that could not complete (``failed``, with its error) so it shows beside the others."""
    return int(conn.execute(insert(Audit).values(
        monitor_id=monitor_id, baseline_id=baseline_id, window_start=window[0], window_end=window[1],
        batch_ids=list(batch_ids or []), status="failed", params=params or {}, error=error[:4000],
        finished_at=func.now(),
    ).returning(Audit.id)).scalar_one())


@dataclass(frozen=True)
class AuditRow:
    """One audit as ``t2c audit list`` shows it."""

    id: int
    status: AuditStatus
    started_at: datetime
    finished_at: datetime | None
    batches: list[str]
    n_current: int
    n_flagged: int
    error: str | None


def list_audits(conn: Connection, monitor_id: int, *, limit: int = 20) -> list[AuditRow]:
    """The monitor's latest audits, newest first, with the external ids of their batches."""
    rows = conn.execute(
        select(Audit.id, Audit.status, Audit.started_at, Audit.finished_at, Audit.batch_ids, Audit.n_current,
               Audit.n_flagged, Audit.error)
        .where(Audit.monitor_id == monitor_id).order_by(Audit.started_at.desc(), Audit.id.desc()).limit(limit)
    ).all()
    wanted = {int(b) for r in rows for b in r.batch_ids}
    names = dict(conn.execute(select(Batch.id, Batch.external_id).where(Batch.id.in_(wanted))).all()) if wanted else {}
    return [AuditRow(id=r.id, status=r.status, started_at=r.started_at, finished_at=r.finished_at,
                     batches=[names.get(int(b), str(b)) for b in r.batch_ids], n_current=r.n_current,
                     n_flagged=r.n_flagged, error=r.error) for r in rows]


def audit_direction(conn: Connection, monitor_id: int, audit_id: int) -> np.ndarray | None:
    """The drift direction (window mean minus baseline mean of aligned vectors) of the monitor's audit
    ``audit_id``; None when it is zero or the audit failed; ``ConfigError`` when there is no such audit."""
    row = conn.execute(select(Audit.direction, Audit.status)
                       .where(Audit.id == audit_id, Audit.monitor_id == monitor_id)).one_or_none()
    if row is None:
        raise ConfigError(f"The monitor has no audit {audit_id}: `t2c audit list --monitor NAME` shows its audits.")
    return None if row.direction is None else np.asarray(row.direction, dtype=np.float32)


@dataclass(frozen=True)
class StoredExplanation:
    """What an audit stored about its shift: the explanation JSON (roots, echoes, vector test, words)
    and the part of the drift direction the roots do not explain."""

    status: str
    explanation: dict[str, Any]
    residual: np.ndarray | None


def audit_explanation(conn: Connection, monitor_id: int, audit_id: int) -> StoredExplanation:
    """The stored explanation of the monitor's audit ``audit_id`` (``ConfigError`` when there is none)."""
    row = conn.execute(select(Audit.status, Audit.explanation, Audit.residual)
                       .where(Audit.id == audit_id, Audit.monitor_id == monitor_id)).one_or_none()
    if row is None:
        raise ConfigError(f"The monitor has no audit {audit_id}: `t2c audit list --monitor NAME` shows its audits.")
    residual = None if row.residual is None else np.asarray(row.residual, dtype=np.float32)
    return StoredExplanation(status=row.status, explanation=dict(row.explanation or {}), residual=residual)


def neighbour_audits(conn: Connection, monitor_id: int, audit_id: int) -> tuple[int | None, int | None]:
    """The monitor's done audits just before and just after ``audit_id``."""
    done = [Audit.monitor_id == monitor_id, Audit.status == "done"]
    before = conn.execute(select(func.max(Audit.id)).where(*done, Audit.id < audit_id)).scalar()
    after = conn.execute(select(func.min(Audit.id)).where(*done, Audit.id > audit_id)).scalar()
    return before, after


@dataclass(frozen=True)
class StoredResult:
    """One concept's stored line of an audit, in bank order."""

    name: str
    ks_stat: float
    p_value: float
    q_value: float
    effect: float
    direction: int
    flagged: bool
    rank: int | None


@dataclass(frozen=True)
class StoredAudit:
    """A done audit as stored: enough to write its report again or decode it later."""

    id: int
    baseline_id: int
    batch_ids: list[int]
    batches: list[str]
    n_current: int
    params: dict[str, Any]
    window: tuple[datetime | None, datetime | None]
    explanation: dict[str, Any]
    residual: np.ndarray | None
    direction: np.ndarray | None
    results: list[StoredResult]
    report_error: str | None


def stored_audit(conn: Connection, monitor_id: int, audit_id: int) -> StoredAudit:
    """The monitor's done audit ``audit_id`` (``ConfigError`` when there is none, or it failed)."""
    row = conn.execute(select(Audit.id, Audit.status, Audit.error, Audit.baseline_id, Audit.batch_ids,
                              Audit.n_current, Audit.params, Audit.window_start, Audit.window_end,
                              Audit.explanation, Audit.residual, Audit.direction, Audit.report_error)
                       .where(Audit.id == audit_id, Audit.monitor_id == monitor_id)).one_or_none()
    if row is None:
        raise ConfigError(f"The monitor has no audit {audit_id}: `t2c audit list --monitor NAME` shows its audits.")
    if row.status != "done":
        raise ConfigError(f"Audit {audit_id} {row.status} ({row.error or 'no error recorded'}): it has no results.")
    results = conn.execute(
        select(Concept.name, AuditResult.ks_stat, AuditResult.p_value, AuditResult.q_value, AuditResult.effect,
               AuditResult.direction, AuditResult.flagged, AuditResult.rank)
        .join(Concept, Concept.id == AuditResult.concept_id).where(AuditResult.audit_id == audit_id)
        .order_by(Concept.position)).all()
    ids = [int(b) for b in row.batch_ids]
    names = dict(conn.execute(select(Batch.id, Batch.external_id).where(Batch.id.in_(ids))).all()) if ids else {}
    return StoredAudit(
        id=row.id, baseline_id=row.baseline_id, batch_ids=ids, batches=[names.get(b, str(b)) for b in ids],
        n_current=row.n_current, params=dict(row.params or {}), window=(row.window_start, row.window_end),
        explanation=dict(row.explanation or {}), residual=_vector(row.residual), direction=_vector(row.direction),
        results=[StoredResult(r.name, r.ks_stat, r.p_value, r.q_value, r.effect, int(r.direction), bool(r.flagged),
                              r.rank) for r in results],
        report_error=row.report_error)


def _vector(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float32)


def audits_to_refresh(conn: Connection, monitor_id: int, *, since: datetime | None = None) -> list[int]:
    """Done audits of the monitor that found a shift but have no words yet, or whose report is missing
    (never written, or its writing failed), oldest first."""
    has_report = select(Report.id).where(Report.audit_id == Audit.id).exists()
    no_words = text("(audit.n_flagged > 0 OR (audit.explanation ->> 'unlisted')::boolean) "
                    "AND coalesce(audit.explanation -> 'words', 'null'::jsonb) = 'null'::jsonb")
    query = (select(Audit.id).where(Audit.monitor_id == monitor_id, Audit.status == "done",
                                    or_(no_words, ~has_report, Audit.report_error.is_not(None))).order_by(Audit.id))
    if since is not None:
        query = query.where(Audit.started_at >= since)
    return list(conn.execute(query).scalars())


def set_audit_words(conn: Connection, audit_id: int, words: dict[str, Any] | None, note: str | None) -> None:
    """Store the decoded words (and a note on why there are none) in an audit's explanation."""
    explanation = conn.execute(select(Audit.explanation).where(Audit.id == audit_id)).scalar_one()
    conn.execute(update(Audit).where(Audit.id == audit_id).values(
        explanation={**(explanation or {}), "words": words, "note": note}))
