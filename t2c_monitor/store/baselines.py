"""Baselines: the reference batches of a monitor and their score samples, stored sorted per concept
(``baseline_concept.scores``), because sorting is most of a KS audit's work and a baseline serves many audits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Connection, insert, select, update

from t2c_monitor.errors import ConfigError
from t2c_monitor.store.copy import read_matrix
from t2c_monitor.store.models import (
    Baseline,
    Batch,
    Concept,
)


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


def baseline_mean(conn: Connection, monitor_id: int) -> np.ndarray | None:
    """The mean aligned vector of the monitor's active baseline (None when it has none)."""
    value = conn.execute(select(Baseline.mean_vector)
                         .where(Baseline.monitor_id == monitor_id, Baseline.active)).scalar_one_or_none()
    return None if value is None else np.asarray(value, dtype=np.float32)


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
