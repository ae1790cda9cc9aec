"""Search over a monitor's stored aligned vectors, in SQL: concept logic and nearest neighbours.

Everything runs in PostgreSQL; Python sends query vectors and thresholds, and receives the hits.

* **Similarity** of an image to a concept is the inner product of its unit aligned vector with the
  concept's unit vector (``-(a <#> b)``: pgvector's negative inner product; for unit vectors it is
  the cosine), computed from ``image.embedding``, so bank concepts, concepts of other banks and
  free text are treated alike.
* **Corpus statistics** (count, mean and population standard deviation of each concept's
  similarity) are computed in one scan and cached in ``search_stat`` per corpus and query vector,
  with the corpus's fingerprint (its count and highest image id): images are only ever added or
  dropped, so a changed fingerprint is a changed corpus, and the statistics are computed again.
  Entries of a changed corpus, and any older than a day, are deleted as new ones are written.
* **Concept logic** scans the corpus once: every constraint's similarity per image (a materialised
  CTE), the count left after each constraint, and the hits that satisfy all, best first.
* **Nearest neighbours** go through the width's partial HNSW index (``store.vectors``) when it
  exists. pgvector 0.6 filters an index scan's candidates *after* the scan (it has no iterative
  scans), so a narrowed corpus can get fewer rows than asked; ``nearest`` then widens
  ``hnsw.ef_search`` by the filter's observed selectivity (up to pgvector's 1000) or answers
  exactly, so it always returns the rows asked for when the corpus has them. Exact search orders
  by an expression the index cannot serve, so the planner scans.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, text

from t2c_monitor.search.query import Constraint, Corpus
from t2c_monitor.store.vectors import hnsw_index_name, vector_literal

MAX_EF_SEARCH = 1000  # pgvector's limit for hnsw.ef_search


def _corpus_where(corpus: Corpus) -> tuple[str, dict[str, Any]]:
    """The corpus as a WHERE clause over ``image i`` and its bound parameters (every value is bound)."""
    dim = int(corpus.dim)
    clauses = ["i.monitor_id = :monitor_id", "i.status = 'ok'", f"i.dim = {dim}", "i.embedding IS NOT NULL"]
    params: dict[str, Any] = {"monitor_id": corpus.monitor_id}
    if corpus.batches:
        clauses.append("i.batch_id IN (SELECT b.id FROM batch b WHERE b.monitor_id = :monitor_id "
                       "AND b.external_id = ANY(:batches))")
        params["batches"] = list(corpus.batches)
    if corpus.since is not None:
        clauses.append("i.created_at >= :since")
        params["since"] = corpus.since
    if corpus.until is not None:
        clauses.append("i.created_at < :until")
        params["until"] = corpus.until
    for n, (key, value) in enumerate(sorted(corpus.where.items())):
        clauses.append(f"i.meta ->> :meta_key_{n} = :meta_value_{n}")
        params[f"meta_key_{n}"], params[f"meta_value_{n}"] = key, value
    return " AND ".join(clauses), params


def _similarity(dim: int, name: str) -> str:
    return f"-((i.embedding::vector({dim})) <#> CAST(:{name} AS vector({dim})))"


def corpus_key(corpus: Corpus) -> str:
    """A stable key of what a corpus is (its monitor, width and filters)."""
    payload = json.dumps({"monitor": corpus.monitor_id, **corpus.to_dict()}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def vector_key(vector: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vector, dtype=np.float32).tobytes()).hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a corpus's content: images are only added or dropped, never changed."""

    n: int
    max_image_id: int


def corpus_fingerprint(conn: Connection, corpus: Corpus) -> Fingerprint:
    where, params = _corpus_where(corpus)
    row = conn.execute(text(f"SELECT count(*) AS n, coalesce(max(i.id), 0) AS top FROM image i WHERE {where}"),
                       params).one()
    return Fingerprint(int(row.n), int(row.top))


@dataclass(frozen=True)
class ConceptStats:
    mean: float
    std: float


def corpus_stats(conn: Connection, corpus: Corpus, vectors: np.ndarray) -> tuple[Fingerprint, list[ConceptStats],
                                                                                     int]:
    """Each query vector's similarity mean and standard deviation over the corpus, from the cache where
    the corpus is unchanged, else computed in one scan and cached. Returns the fingerprint, the
    statistics in ``vectors`` order, and how many were computed (not cached)."""
    fingerprint = corpus_fingerprint(conn, corpus)
    key = corpus_key(corpus)
    keys = [vector_key(v) for v in vectors]
    cached = {
        r.vector_key: ConceptStats(r.mean, r.std)
        for r in conn.execute(
            text("SELECT vector_key, mean, std FROM search_stat WHERE corpus_key = :key AND vector_key = ANY(:keys) "
                 "AND n = :n AND max_image_id = :top"),
            {"key": key, "keys": keys, "n": fingerprint.n, "top": fingerprint.max_image_id},
        )
    }
    missing = [i for i, k in enumerate(keys) if k not in cached]
    if missing:
        # what can never be valid again (the corpus changed since), and anything older than a day (a
        # corpus given as "the last 24 h" is another corpus every minute): the cache stays small
        conn.execute(
            text("DELETE FROM search_stat WHERE monitor_id = :monitor_id AND (computed_at < now() - interval '1 day' "
                 "OR (corpus_key = :key AND (n <> :n OR max_image_id <> :top)))"),
            {"monitor_id": corpus.monitor_id, "key": key, "n": fingerprint.n, "top": fingerprint.max_image_id})
    if missing and fingerprint.n:
        where, params = _corpus_where(corpus)
        columns = []
        for j, i in enumerate(missing):
            params[f"q{j}"] = vector_literal(vectors[i])
            sim = _similarity(corpus.dim, f"q{j}")
            columns.append(f"avg({sim}) AS m{j}, stddev_pop({sim}) AS s{j}")
        row = conn.execute(text(f"SELECT {', '.join(columns)} FROM image i WHERE {where}"), params).one()
        for j, i in enumerate(missing):
            stats = ConceptStats(float(getattr(row, f"m{j}")), float(getattr(row, f"s{j}") or 0.0))
            cached[keys[i]] = stats
            conn.execute(
                text("INSERT INTO search_stat (monitor_id, corpus_key, vector_key, n, max_image_id, mean, std) "
                     "VALUES (:monitor_id, :key, :vkey, :n, :top, :mean, :std) "
                     "ON CONFLICT (corpus_key, vector_key) DO UPDATE SET n = EXCLUDED.n, "
                     "max_image_id = EXCLUDED.max_image_id, mean = EXCLUDED.mean, std = EXCLUDED.std, "
                     "computed_at = now()"),
                {"monitor_id": corpus.monitor_id, "key": key, "vkey": keys[i], "n": fingerprint.n,
                 "top": fingerprint.max_image_id, "mean": stats.mean, "std": stats.std},
            )
    if not fingerprint.n:
        return fingerprint, [ConceptStats(0.0, 0.0) for _ in keys], 0
    return fingerprint, [cached[k] for k in keys], len(missing)


@dataclass(frozen=True)
class Hit:
    """One image found: its id, URI, batch, metadata, and its similarity per query vector."""

    image_id: int
    uri: str
    batch: str
    meta: dict[str, Any]
    similarities: tuple[float, ...]
    rank_score: float


def _hit(row: Any, n_vectors: int) -> Hit:
    return Hit(int(row.id), row.uri, row.batch, dict(row.meta or {}),
               tuple(float(getattr(row, f"s{j}")) for j in range(n_vectors)), float(row.rank_score))


def concept_logic(conn: Connection, corpus: Corpus, constraints: list[Constraint], vectors: np.ndarray,
                  stats: list[ConceptStats], *, limit: int) -> tuple[list[int], list[Hit]]:
    """The count of the corpus left after each constraint in order (the corpus size first), and up to
    ``limit`` images satisfying all, ranked by the sum of their signed standardised similarities."""
    where, params = _corpus_where(corpus)
    sims, conditions, ranks = [], [], []
    for j, (constraint, vector, stat) in enumerate(zip(constraints, vectors, stats, strict=True)):
        params[f"q{j}"] = vector_literal(vector)
        sims.append(f"{_similarity(corpus.dim, f'q{j}')} AS s{j}")
        bound = stat.mean + constraint.k * stat.std if constraint.sign == "+" else stat.mean - constraint.k * stat.std
        params[f"t{j}"], params[f"m{j}"] = bound, stat.mean
        params[f"d{j}"] = stat.std if stat.std > 0 else 1.0
        conditions.append(f"s.s{j} >= :t{j}" if constraint.sign == "+" else f"s.s{j} <= :t{j}")
        ranks.append(f"{'' if constraint.sign == '+' else '-'}(s.s{j} - :m{j}) / :d{j}")
    steps = ", ".join(f"count(*) FILTER (WHERE {' AND '.join(conditions[: j + 1])}) AS n{j + 1}"
                      for j in range(len(constraints)))
    columns = ", ".join(f"s.s{j}" for j in range(len(constraints)))
    params["limit"] = int(limit)
    rows = conn.execute(text(f"""
        WITH scored AS MATERIALIZED (
            SELECT i.id, i.uri, i.batch_id, i.meta, {', '.join(sims)} FROM image i WHERE {where}
        ), steps AS (
            SELECT count(*) AS n0, {steps} FROM scored s
        )
        SELECT steps.*, hit.* FROM steps LEFT JOIN LATERAL (
            SELECT s.id, s.uri, b.external_id AS batch, s.meta, {columns}, ({' + '.join(ranks)}) AS rank_score
            FROM scored s JOIN batch b ON b.id = s.batch_id
            WHERE {' AND '.join(conditions)}
            ORDER BY rank_score DESC, s.id LIMIT :limit
        ) hit ON true
    """), params).all()
    counts = [int(getattr(rows[0], f"n{j}")) for j in range(len(constraints) + 1)]
    return counts, [_hit(r, len(constraints)) for r in rows if r.id is not None]


@dataclass(frozen=True)
class Neighbours:
    """The nearest images and how they were found: ``hnsw`` (with the ef_search that sufficed) or ``exact``."""

    hits: list[Hit]
    method: str
    ef_search: int | None


def _nearest_sql(corpus: Corpus, *, exact: bool) -> tuple[str, dict[str, Any]]:
    where, params = _corpus_where(corpus)
    dim = int(corpus.dim)
    distance = f"(i.embedding::vector({dim})) <=> CAST(:q0 AS vector({dim}))"
    # the index serves exactly `ORDER BY distance LIMIT k`; `+ 0` (and a tie-break) make an ORDER BY
    # no index serves: the exact answer, by a scan
    order = f"({distance}) + 0, i.id" if exact else distance
    nearest_rows = (f"SELECT i.id, i.uri, i.batch_id, i.meta, {distance} AS distance FROM image i "
                    f"WHERE {where} ORDER BY {order} LIMIT :limit")
    return (f"SELECT n.id, n.uri, b.external_id AS batch, n.meta, 1 - n.distance AS s0, 1 - n.distance AS rank_score "
            f"FROM ({nearest_rows}) n JOIN batch b ON b.id = n.batch_id ORDER BY n.distance, n.id"), params


def index_used(conn: Connection, corpus: Corpus, query: np.ndarray, k: int) -> bool:
    """Whether the planner answers a nearest-neighbour query of ``corpus`` through the width's HNSW index."""
    sql, params = _nearest_sql(corpus, exact=False)
    params.update(q0=vector_literal(query), limit=int(k))
    plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"), params).scalar_one()
    return hnsw_index_name(corpus.dim) in json.dumps(plan)


def nearest(conn: Connection, corpus: Corpus, query: np.ndarray, k: int, *, exact: bool = False,
            ef_search: int = 40) -> Neighbours:
    """The ``k`` images of ``corpus`` nearest ``query`` by cosine distance.

    Through the HNSW index unless ``exact`` or the planner does not use it. When a filtered index scan
    returns fewer than ``k`` rows, the share of candidates that passed the filter estimates how wide
    the next scan must be (``ef_search`` up to pgvector's 1000, with a margin); when that is beyond
    1000, or the corpus holds fewer than ``k`` images in all, the exact answer is given.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    query = np.asarray(query, dtype=np.float32).ravel()
    if query.size != corpus.dim:
        raise ValueError(f"query has width {query.size}, the corpus {corpus.dim}")
    if not exact and index_used(conn, corpus, query, k):
        ef = min(max(int(ef_search), 2 * k), MAX_EF_SEARCH)
        for _ in range(4):
            hits = _run_nearest(conn, corpus, query, k, exact=False, ef_search=ef)
            if len(hits) >= k:
                return Neighbours(hits, "hnsw", ef)
            if ef >= MAX_EF_SEARCH or not hits:
                break
            passed = len(hits) / ef  # the filter's selectivity among the index's candidates
            ef = int(min(MAX_EF_SEARCH, max(2 * ef, 1.5 * k / passed)))
    return Neighbours(_run_nearest(conn, corpus, query, k, exact=True, ef_search=None), "exact", None)


def _run_nearest(conn: Connection, corpus: Corpus, query: np.ndarray, k: int, *, exact: bool,
                 ef_search: int | None) -> list[Hit]:
    sql, params = _nearest_sql(corpus, exact=exact)
    params.update(q0=vector_literal(query), limit=int(k))
    if ef_search is not None:  # for the rest of this transaction (the connection begins one on first use)
        conn.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef_search)}"))
    rows = conn.execute(text(sql), params).all()
    return [_hit(r, 1) for r in rows]
