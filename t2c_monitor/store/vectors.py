"""Similarity search over aligned image vectors of any width.

Vector columns are untyped (see the initial migration), so each width gets its own partial HNSW
index on ``(embedding::vector(d)) WHERE dim = d``; queries repeat that expression and predicate so
the planner can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

MAX_INDEXED_DIM = 2000  # pgvector's HNSW limit for `vector`
BUILD_MEMORY = "1GB"  # maintenance_work_mem for an index build: 100,000 512-d rows need about 450 MB
BUILD_WORKERS = 2  # parallel workers of an index build (pgvector 0.6 builds in parallel)


def _check_dim(dim: int) -> int:
    if not isinstance(dim, (int, np.integer)) or not 1 <= dim <= MAX_INDEXED_DIM:
        raise ValueError(f"dim must be an integer in 1..{MAX_INDEXED_DIM}, got {dim!r}")
    return int(dim)


def hnsw_index_name(dim: int) -> str:
    return f"hnsw_image_embedding_{_check_dim(dim)}"


def ensure_hnsw_index(conn: Connection | Session, dim: int) -> str:
    """Build the cosine HNSW index for width ``dim`` if missing, and refresh statistics (call after bulk loads).

    Ingestion never builds one. Once built, every later image of that width is also inserted into
    the graph as it is stored, which costs far more than the rest of the write: on the 2-core
    development machine 512-d rows went in at about 300 a second into a new index (``bench/store.py
    --hnsw --rows 1000``) and 125 a second over 20,000 rows, against about 15,000 without one.
    """
    dim = _check_dim(dim)
    name = hnsw_index_name(dim)
    # the graph must fit in maintenance_work_mem or the build slows several times (pgvector warns);
    # these settings last for the build's transaction only
    conn.execute(text(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'"))
    conn.execute(text(f"SET LOCAL max_parallel_maintenance_workers = {BUILD_WORKERS}"))
    conn.execute(
        text(
            f"CREATE INDEX IF NOT EXISTS {name} ON image "
            f"USING hnsw ((embedding::vector({dim})) vector_cosine_ops) WHERE dim = {dim}"
        )
    )
    conn.execute(text("ANALYZE image"))  # fresh statistics so the planner sees the loaded rows
    return name


def hnsw_index_exists(conn: Connection | Session, dim: int) -> bool:
    return conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": hnsw_index_name(dim)}).scalar_one()


def drop_hnsw_index(conn: Connection | Session, dim: int) -> None:
    """Drop the width's index (before a bulk load; ``ensure_hnsw_index`` builds it again after)."""
    conn.execute(text(f"DROP INDEX IF EXISTS {hnsw_index_name(dim)}"))


@dataclass(frozen=True)
class IndexStats:
    name: str
    exists: bool
    bytes: int
    rows: int  # stored vectors of that width (what the index covers, or would)


def hnsw_index_stats(conn: Connection | Session, dim: int) -> IndexStats:
    name = hnsw_index_name(dim)
    size = conn.execute(text("SELECT CASE WHEN to_regclass(:name) IS NULL THEN NULL "
                             "ELSE pg_relation_size(to_regclass(:name)) END"), {"name": name}).scalar_one()
    rows = conn.execute(text("SELECT count(*) FROM image WHERE dim = :dim AND embedding IS NOT NULL"),
                        {"dim": _check_dim(dim)}).scalar_one()
    return IndexStats(name=name, exists=size is not None, bytes=int(size or 0), rows=int(rows))


def vector_literal(vector: Sequence[float] | np.ndarray) -> str:
    """pgvector's text form of a vector, for a bound parameter cast to ``vector``."""
    values = np.asarray(vector, dtype=np.float32).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("vector must be non-empty and finite")
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def nearest_images(
    session: Session, query: Sequence[float] | np.ndarray, *, k: int = 10, monitor_id: int | None = None
) -> list[tuple[int, float]]:
    """The ``k`` stored images closest to ``query`` by cosine distance, as (image id, distance)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    dim = _check_dim(len(np.asarray(query).ravel()))
    where = "dim = :dim AND status = 'ok' AND embedding IS NOT NULL"
    if monitor_id is not None:
        where += " AND monitor_id = :monitor_id"
    rows = session.execute(
        text(
            f"SELECT id, (embedding::vector({dim})) <=> CAST(:q AS vector({dim})) AS distance "
            f"FROM image WHERE {where} ORDER BY distance LIMIT :k"
        ),
        {"q": vector_literal(query), "dim": dim, "k": k, "monitor_id": monitor_id},
    )
    return [(int(r.id), float(r.distance)) for r in rows]
