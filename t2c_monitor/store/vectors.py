"""Similarity search over aligned image vectors of any width.

Vector columns are untyped (see the initial migration), so each width gets its own partial HNSW
index on ``(embedding::vector(d)) WHERE dim = d``; queries repeat that expression and predicate so
the planner can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

MAX_INDEXED_DIM = 2000  # pgvector's HNSW limit for `vector`


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
    conn.execute(
        text(
            f"CREATE INDEX IF NOT EXISTS {name} ON image "
            f"USING hnsw ((embedding::vector({dim})) vector_cosine_ops) WHERE dim = {dim}"
        )
    )
    conn.execute(text("ANALYZE image"))  # fresh statistics so the planner sees the loaded rows
    return name


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
    where = "dim = :dim AND status = 'ok'" + (" AND monitor_id = :monitor_id" if monitor_id is not None else "")
    rows = session.execute(
        text(
            f"SELECT id, (embedding::vector({dim})) <=> CAST(:q AS vector({dim})) AS distance "
            f"FROM image WHERE {where} ORDER BY distance LIMIT :k"
        ),
        {"q": vector_literal(query), "dim": dim, "k": k, "monitor_id": monitor_id},
    )
    return [(int(r.id), float(r.distance)) for r in rows]
