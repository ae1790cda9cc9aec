"""Baselines and audits: which batches they cover, their score samples, and their results.

Baseline score samples are stored sorted per concept (``baseline_concept.scores``), because
sorting is most of a KS audit's work and a baseline serves many audits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import ARRAY, BigInteger, Connection, all_, bindparam, delete, func, insert, or_, select, text, update

from t2c_monitor.errors import ConfigError
from t2c_monitor.store.batches import batch_bank
from t2c_monitor.store.copy import read_matrix
from t2c_monitor.store.models import (
    Audit,
    AuditResult,
    AuditStatus,
    Baseline,
    Batch,
    Concept,
    Image,
    ImageScore,
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


def batch_scores(conn: Connection, batch_id: int, bank_id: int) -> np.ndarray:
    """Concept scores ``(n, k)`` of a batch's ok images against one bank: those it was ingested with
    are in the image rows, those against another bank in ``image_score``; by image id."""
    if batch_bank(conn, batch_id) == bank_id:  # else: image_score
        return read_matrix(
            conn,
            "SELECT scores FROM image WHERE batch_id = %(b)s AND status = 'ok' AND scores IS NOT NULL ORDER BY id",
            {"b": batch_id},
        )
    return read_matrix(
        conn,
        "SELECT s.scores FROM image_score s JOIN image i ON i.id = s.image_id "
        "WHERE i.batch_id = %(b)s AND s.bank_id = %(bank)s ORDER BY i.id",
        {"b": batch_id, "bank": bank_id},
    )


def ok_image_ids(conn: Connection, batch_id: int) -> list[int]:
    query = select(Image.id).where(Image.batch_id == batch_id, Image.status == "ok").order_by(Image.id)
    return list(conn.execute(query).scalars().all())


def replace_scores(conn: Connection, batch_id: int, bank_id: int, image_ids: list[int], scores: np.ndarray) -> None:
    """Store a batch's scores against a bank (e.g. a new bank version), replacing any partial set:
    in the image rows for the batch's own bank, else as ``image_score`` rows."""
    from t2c_monitor.store import copy

    if batch_bank(conn, batch_id) == bank_id:  # else: image_score
        conn.execute(update(Image).where(Image.batch_id == batch_id, Image.scores.is_not(None),
                                         Image.id != all_(bindparam("ids", [int(i) for i in image_ids],
                                                                    type_=ARRAY(BigInteger))))
                     .values(scores=None))  # one array parameter, however many images
        conn.execute(
            text("CREATE TEMPORARY TABLE t2c_new_scores (image_id bigint PRIMARY KEY, scores real[]) ON COMMIT DROP")
        )
        copy.copy_into(conn, "t2c_new_scores", [
            copy.int_column("image_id", image_ids, bits=64),
            copy.real_array_column("scores", scores),
        ])
        conn.execute(
            text("UPDATE image i SET scores = n.scores FROM t2c_new_scores n "
                 "WHERE i.id = n.image_id AND i.batch_id = :b"),
            {"b": batch_id},
        )
        conn.execute(text("DROP TABLE t2c_new_scores"))
        return
    conn.execute(delete(ImageScore).where(ImageScore.image_id == Image.id, Image.batch_id == batch_id,
                                          ImageScore.bank_id == bank_id))
    copy.copy_into(conn, "image_score", [
        copy.int_column("image_id", image_ids, bits=64),
        copy.int_column("bank_id", [bank_id] * len(image_ids)),
        copy.real_array_column("scores", scores),
    ])


def batch_embeddings(conn: Connection, batch_id: int) -> np.ndarray:
    """Aligned unit vectors ``(n, d)`` of a batch's ok images, less those whose vector retention dropped
    (``(0, 0)`` when none is left; ``ConfigError`` when the batch holds vectors of several widths: images
    ingested under another aligner or CLIP model)."""
    try:
        return read_matrix(conn, "SELECT embedding FROM image WHERE batch_id = %(b)s AND embedding IS NOT NULL "
                                 "ORDER BY id", {"b": batch_id})
    except ValueError as exc:
        if "different lengths" not in str(exc):
            raise
        name = conn.execute(select(Batch.external_id).where(Batch.id == batch_id)).scalar()
        raise ConfigError(
            f"Batch {name} holds aligned vectors of different widths: some of its images were ingested with "
            "another aligner or CLIP model than the rest, so they are not comparable. Ingest the images again "
            "under a new batch id (`t2c ingest SOURCE --monitor NAME --batch-id NEW`) and leave this batch out."
        ) from None


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


def insert_baseline(conn: Connection, *, monitor_id: int, aligner_id: int, bank_id: int, batch_ids: list[int],
                    n_images: int, reservoir_size: int, mean_vector: np.ndarray, sorted_scores: np.ndarray,
                    vectors: np.ndarray | None = None) -> int:
    """Store a baseline (sorted score rows, one per concept in bank order, and a sample of its aligned
    vectors) and make it the active one."""
    from t2c_monitor.store import copy

    conn.execute(update(Baseline).where(Baseline.monitor_id == monitor_id, Baseline.active).values(active=False))
    baseline_id = conn.execute(insert(Baseline).values(
        monitor_id=monitor_id, aligner_id=aligner_id, bank_id=bank_id, active=True, batch_ids=list(batch_ids),
        n_images=n_images, reservoir_size=reservoir_size, dim=int(mean_vector.shape[0]),
        mean_vector=np.asarray(mean_vector, dtype=np.float32),
        vectors=None if vectors is None else np.ascontiguousarray(vectors, dtype="<f4").tobytes(),
        n_vectors=None if vectors is None else int(vectors.shape[0]),
    ).returning(Baseline.id)).scalar_one()
    ids = concept_ids(conn, bank_id)
    if len(ids) != sorted_scores.shape[0]:
        raise ValueError(f"{sorted_scores.shape[0]} score rows for {len(ids)} concepts of bank {bank_id}")
    copy.copy_into(conn, "baseline_concept", [
        copy.int_column("baseline_id", [baseline_id] * len(ids)),
        copy.int_column("concept_id", ids),
        copy.int_column("n", [n_images] * len(ids)),
        copy.real_array_column("scores", sorted_scores),
    ])
    return int(baseline_id)


@dataclass(frozen=True)
class StoredBaseline:
    id: int
    aligner_id: int
    bank_id: int
    n_images: int
    batch_ids: list[int]
    mean_vector: np.ndarray
    sorted_scores: np.ndarray  # (k, n) in bank order
    created_at: datetime
    vectors: np.ndarray | None = None  # (n_vectors, dim) aligned vectors; None for baselines built before 0005


def active_baseline_id(conn: Connection, monitor_id: int) -> int | None:
    query = select(Baseline.id).where(Baseline.monitor_id == monitor_id, Baseline.active)
    return conn.execute(query).scalar_one_or_none()


def concept_ids(conn: Connection, bank_id: int) -> list[int]:
    """The bank's concept ids in bank order."""
    query = select(Concept.id).where(Concept.bank_id == bank_id).order_by(Concept.position)
    return list(conn.execute(query).scalars().all())


def active_baseline(conn: Connection, monitor_id: int, monitor_name: str) -> StoredBaseline:
    baseline_id = active_baseline_id(conn, monitor_id)
    if baseline_id is None:
        raise ConfigError(f"Monitor {monitor_name} has no baseline yet: build one from reference batches with "
                          f"`t2c baseline build --monitor {monitor_name} --batches ID[,ID...]`.")
    return baseline_by_id(conn, baseline_id)


def baseline_by_id(conn: Connection, baseline_id: int) -> StoredBaseline:
    """A stored baseline (active or not)."""
    row = conn.execute(
        select(Baseline.id, Baseline.aligner_id, Baseline.bank_id, Baseline.n_images, Baseline.batch_ids,
               Baseline.mean_vector, Baseline.created_at, Baseline.vectors, Baseline.n_vectors, Baseline.dim
               ).where(Baseline.id == baseline_id)
    ).one()
    scores = read_matrix(
        conn, "SELECT bc.scores FROM baseline_concept bc JOIN concept c ON c.id = bc.concept_id "
              "WHERE bc.baseline_id = %(b)s ORDER BY c.position", {"b": row.id},
    )
    mean = np.asarray(row.mean_vector, dtype=np.float32)  # pgvector's type reads it as an array
    vectors = None
    if row.vectors is not None:
        vectors = np.frombuffer(row.vectors, dtype="<f4").reshape(row.n_vectors, row.dim)
    return StoredBaseline(id=row.id, aligner_id=row.aligner_id, bank_id=row.bank_id, n_images=row.n_images,
                          batch_ids=list(row.batch_ids), mean_vector=mean, sorted_scores=scores,
                          created_at=row.created_at, vectors=vectors)


def window_embeddings(conn: Connection, batch_ids: Sequence[int], dim: int) -> np.ndarray:
    """The aligned vectors ``(n, dim)`` of the batches' ok images that still have one (retention may have
    dropped some or all: ``n`` may be below the images' count, or 0)."""
    kept = [m for m in (batch_embeddings(conn, b) for b in batch_ids) if m.size]
    return np.concatenate(kept) if kept else np.zeros((0, dim), np.float32)


def sample_embeddings(conn: Connection, batch_ids: list[int], limit: int) -> np.ndarray:
    """Up to ``limit`` aligned vectors of the batches' ok images, a fixed pseudo-random choice (the same
    rows every time: ordered by a hash of the image id)."""
    return read_matrix(
        conn, "SELECT embedding FROM image WHERE batch_id = ANY(%(b)s) AND embedding IS NOT NULL "
              "ORDER BY md5(id::text) LIMIT %(n)s", {"b": list(batch_ids), "n": int(limit)},
    )


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


def baseline_mean(conn: Connection, monitor_id: int) -> np.ndarray | None:
    """The mean aligned vector of the monitor's active baseline (None when it has none)."""
    value = conn.execute(select(Baseline.mean_vector)
                         .where(Baseline.monitor_id == monitor_id, Baseline.active)).scalar_one_or_none()
    return None if value is None else np.asarray(value, dtype=np.float32)


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


def baseline_batches(conn: Connection, monitor_id: int) -> tuple[list[str], int] | None:
    """The external ids of the active baseline's batches and its reservoir size (None: no baseline)."""
    row = conn.execute(select(Baseline.batch_ids, Baseline.reservoir_size)
                       .where(Baseline.monitor_id == monitor_id, Baseline.active)).one_or_none()
    if row is None:
        return None
    ids = [int(b) for b in row.batch_ids]
    names = dict(conn.execute(select(Batch.id, Batch.external_id).where(Batch.id.in_(ids))).all()) if ids else {}
    return [names[b] for b in ids if b in names], int(row.reservoir_size)


def baseline_batch_ids(conn: Connection, baseline_id: int) -> list[int]:
    """The batch ids a baseline was built from."""
    ids = conn.execute(select(Baseline.batch_ids).where(Baseline.id == baseline_id)).scalar_one_or_none()
    return [int(b) for b in ids or []]


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
