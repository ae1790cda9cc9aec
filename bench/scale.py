"""Sizing PostgreSQL for a monitor: bytes per image, what retention gives back, whether partitioning the
image table by month pays, and the HNSW build, measured on a throwaway embedded PostgreSQL.

``--rows`` images are stored through the production write path (``store.images.ChunkWriter``: 512-d
aligned vectors, ``--concepts`` scores in each row, a URI, a sha256 and a little metadata, as ingest
stores them), then spread evenly over the last ``--months`` months (``created_at``) and compacted
(``VACUUM FULL``), so the sizes are those of a table that grew over that time. Figures:

* ``bytes_per_image``: table, TOAST and every index over the rows; ``heap_``, ``toast_`` and ``index_``
  parts; ``vector_bytes_per_image`` (``pg_column_size`` of the vector) and ``scores_bytes_per_image``.
* ``retention_*``: ``store.retention.drop_vectors`` on every image older than three months: seconds,
  images per second, and the bytes per image after it, once ``VACUUM`` lets new rows reuse the space
  (the file keeps its size: ``retention_file_bytes_per_image``) and after ``VACUUM FULL``
  (``retention_compacted_bytes_per_image``, what the table would settle at).
* ``partition_*``: the same rows in a table partitioned by month (``PARTITION BY RANGE (created_at)``)
  against the plain table with its ``(monitor_id, created_at)`` index: the median milliseconds of the
  ingest dashboard's images-per-minute panel over the last day and the last week, of a month's mean
  concept score, and of retention's UPDATE of one month's vectors.
* ``hnsw_build_seconds`` and ``hnsw_index_mb``: the width's HNSW index over all rows.

    python bench/scale.py [--rows 120000] [--dim 512] [--concepts 100] [--months 12] [--repeat 5]

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from search import build_index, latent_vectors, make_database  # bench/ is on sys.path when run as a script
from sqlalchemy import text

from t2c_monitor.store.embedded import start_embedded
from t2c_monitor.store.images import ChunkWriter, ImageChunk
from t2c_monitor.store.retention import drop_vectors

console = Console(stderr=True)

PER_MINUTE = """
SELECT floor(extract(epoch from created_at)/300)*300 AS "time", status, count(*) * 60000.0 / 300000 AS value
FROM {table} WHERE monitor_id = :m AND created_at BETWEEN now() - CAST(:span AS interval) AND now()
GROUP BY 1, 2 ORDER BY 1"""
MONTH_MEAN = """
SELECT avg(scores[7]) FROM {table}
WHERE monitor_id = :m AND created_at BETWEEN now() - interval '95 days' AND now() - interval '65 days'"""


def store(engine, monitor_id: int, batch_id: int, vectors: np.ndarray, concepts: int, rng) -> None:
    chunk = 5000
    with engine.connect() as conn:
        bank_id = conn.execute(text("SELECT bank_id FROM monitor WHERE id = :m"), {"m": monitor_id}).scalar_one()
    with ChunkWriter(engine, writers=2, monitor_id=monitor_id, batch_id=batch_id, bank_id=bank_id) as writer:
        for lo in range(0, len(vectors), chunk):
            idx = np.arange(lo, min(lo + chunk, len(vectors)))
            writer.submit(ImageChunk(
                uris=[f"s3://cameras/cam-{i % 7}/2026/img-{i:08d}.jpg" for i in idx],
                failure_reason=[None] * len(idx), embeddings=vectors[idx],
                scores=rng.uniform(0.1, 0.35, (len(idx), concepts)).astype(np.float32),
                sha256=[f"{i:064x}" for i in idx], meta=[{"camera": int(i % 7)} for i in idx],
                width=[640] * len(idx), height=[480] * len(idx)))


def sizes(conn, table: str = "image") -> dict[str, int]:
    row = conn.execute(text(
        "SELECT pg_relation_size(c.oid) AS heap, coalesce(pg_total_relation_size(c.reltoastrelid), 0) AS toast, "
        "pg_indexes_size(c.oid) AS indexes, pg_total_relation_size(c.oid) AS total "
        "FROM pg_class c WHERE c.relname = :t"), {"t": table}).one()
    return dict(row._mapping)


def median_ms(engine, sql: str, params: dict, repeat: int) -> float:
    times = []
    with engine.connect() as conn:
        conn.execute(text(sql), params).all()  # warm the cache: dashboards refresh the same queries
        for _ in range(repeat):
            started = time.perf_counter()
            conn.execute(text(sql), params).all()
            times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def partitioned_copy(engine, months: int) -> None:
    """``image_by_month``: the image table's columns, partitioned by month of ``created_at``, with the same
    (monitor_id, created_at) index on each partition, holding the same rows."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE image_by_month (LIKE image INCLUDING DEFAULTS) "
                          "PARTITION BY RANGE (created_at)"))
        start = conn.execute(text("SELECT date_trunc('month', min(created_at)) FROM image")).scalar_one()
        for k in range(months + 2):
            conn.execute(text(
                f"CREATE TABLE image_by_month_{k} PARTITION OF image_by_month FOR VALUES "
                f"FROM (CAST(:s AS timestamptz) + interval '{k} month') "
                f"TO (CAST(:s AS timestamptz) + interval '{k + 1} month')"
            ), {"s": start})
        conn.execute(text("INSERT INTO image_by_month SELECT * FROM image"))
        conn.execute(text("CREATE INDEX ON image_by_month (monitor_id, created_at)"))
        conn.execute(text("ALTER TABLE image_by_month ADD PRIMARY KEY (id, created_at)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) image_by_month"))


def month_update_ms(engine, table: str, monitor_id: int) -> float:
    """Retention's UPDATE of one month's vectors (rolled back, so both tables are measured on the same rows)."""
    with engine.connect() as conn:
        transaction = conn.begin()
        started = time.perf_counter()
        conn.execute(text(
            f"UPDATE {table} SET embedding = NULL, embedding_dropped_at = now() WHERE monitor_id = :m "
            "AND created_at BETWEEN now() - interval '95 days' AND now() - interval '65 days'"), {"m": monitor_id})
        ms = (time.perf_counter() - started) * 1000
        transaction.rollback()
    return round(ms, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=120_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--concepts", type=int, default=100, help="concept scores stored in each image row")
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    directions = rng.standard_normal((200, args.dim)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    n = args.rows
    result: dict = {"rows": n, "dim": args.dim, "concepts": args.concepts, "months": args.months}
    with tempfile.TemporaryDirectory(prefix="t2c-bench-scale-") as tmp:
        server = start_embedded(Path(tmp) / "pgdata", delete_on_exit=True)
        engine, monitor_id, (batch_id, _) = make_database(server, args.dim)
        with console.status(f"storing {n} images"):
            started = time.perf_counter()
            store(engine, monitor_id, batch_id, latent_vectors(n, directions, rng), args.concepts, rng)
            result["store_images_per_second"] = round(n / (time.perf_counter() - started))
        with console.status(f"spreading them over {args.months} months and compacting"):
            with engine.begin() as conn:
                conn.execute(text("UPDATE image SET created_at = now() - make_interval(secs => "
                                  f"(id % :n) * {args.months * 30 * 86400} / CAST(:n AS float))"), {"n": n})
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM (FULL, ANALYZE) image"))
        with engine.connect() as conn:
            size = sizes(conn)
            columns = conn.execute(text("SELECT avg(pg_column_size(embedding)), avg(pg_column_size(scores)) "
                                        "FROM image")).one()
        result.update(
            bytes_per_image=round(size["total"] / n), heap_bytes_per_image=round(size["heap"] / n),
            toast_bytes_per_image=round(size["toast"] / n), index_bytes_per_image=round(size["indexes"] / n),
            vector_bytes_per_image=round(float(columns[0])), scores_bytes_per_image=round(float(columns[1])),
            table_mb=round(size["total"] / 2**20, 1))

        with console.status("partitioned by month: copying the rows"):
            partitioned_copy(engine, args.months)
        with engine.connect() as conn:
            result["partitioned_bytes_per_image"] = round(int(conn.execute(text(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                "WHERE inhparent = 'image_by_month'::regclass")).scalar_one()) / n)
        for label, span in (("day", "1 day"), ("week", "7 days")):
            for table in ("image", "image_by_month"):
                key = f"partition_{label}_panel_ms" if table != "image" else f"plain_{label}_panel_ms"
                result[key] = median_ms(engine, PER_MINUTE.format(table=table),
                                        {"m": monitor_id, "span": span}, args.repeat)
        result["plain_month_mean_ms"] = median_ms(engine, MONTH_MEAN.format(table="image"), {"m": monitor_id},
                                                  args.repeat)
        result["partition_month_mean_ms"] = median_ms(engine, MONTH_MEAN.format(table="image_by_month"),
                                                      {"m": monitor_id}, args.repeat)
        result["plain_month_retention_ms"] = month_update_ms(engine, "image", monitor_id)
        result["partition_month_retention_ms"] = month_update_ms(engine, "image_by_month", monitor_id)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE image_by_month"))

        with console.status("building the HNSW index"):
            result["hnsw_build_seconds"], result["hnsw_index_mb"] = build_index(engine, args.dim)
            with engine.begin() as conn:
                conn.execute(text(f"DROP INDEX hnsw_image_embedding_{args.dim}"))

        with console.status("retention: dropping the vectors of images older than three months"):
            cutoff = text("SELECT now() - interval '90 days'")
            with engine.connect() as conn:
                when = conn.execute(cutoff).scalar_one()
            started, dropped = time.perf_counter(), 0
            while True:
                with engine.begin() as conn:
                    k = drop_vectors(conn, monitor_id, when, limit=5000)
                if not k:
                    break
                dropped += k
            seconds = time.perf_counter() - started
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM (ANALYZE) image"))
            with engine.connect() as conn:
                after = sizes(conn)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM (FULL, ANALYZE) image"))
            with engine.connect() as conn:
                compacted = sizes(conn)
        result.update(retention_dropped=dropped, retention_seconds=round(seconds, 2),
                      retention_images_per_second=round(dropped / seconds) if seconds else None,
                      retention_file_bytes_per_image=round(after["total"] / n),
                      retention_compacted_bytes_per_image=round(compacted["total"] / n))
        engine.dispose()
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    result["cpus"] = os.cpu_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
