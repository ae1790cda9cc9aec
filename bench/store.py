"""Storing aligned vectors: the project's binary COPY path against plain ORM inserts and execute_values.

The same rows (512-d unit vectors with concept scores and metadata) go into a fresh database
through each path, on a throwaway embedded PostgreSQL. The COPY path is the production one
(``store.images.ChunkWriter`` over ``store_chunk``, as ``ingest`` stores: images with their
scores in the row, every constraint of the schema, one transaction per chunk), timed end to end
including commits, with ``--writers`` connections (ingest's default ``store_writers``: 2) and
with one (``copy_1_writer``: the ORM and execute_values paths use one connection too). The
paths take turns ``--repeat`` times, each run on a fresh database, so that a burst of load from
elsewhere on a shared machine hits them alike; the fastest run of each counts and every run is
listed. Also compares the two ways of storing concept
scores (one real[] per image vs one row per image and concept).

The width has no HNSW index, as after ``t2c ingest`` (ingestion never builds one). Once
``store.vectors.ensure_hnsw_index`` has built one, every later row of that width is inserted into
it too; ``--hnsw`` measures that case (it is far slower: use fewer ``--rows``).

    python bench/store.py [--rows 20000] [--dim 512] [--concepts 100] [--writers 2] [--repeat 2] [--hnsw]

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from psycopg2.extras import execute_values
from rich.console import Console
from sqlalchemy import text
from sqlalchemy.orm import Session

from t2c_monitor.store import migrate
from t2c_monitor.store import models as m
from t2c_monitor.store.copy import copy_into, int_column, real_array_column
from t2c_monitor.store.embedded import start_embedded
from t2c_monitor.store.engine import make_engine
from t2c_monitor.store.images import ChunkWriter, ImageChunk
from t2c_monitor.store.vectors import ensure_hnsw_index, vector_literal

console = Console(stderr=True)


def fresh_database(server_url: str, name: str):
    admin = make_engine(server_url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = make_engine(server_url.replace("/postgres?", f"/{name}?"))
    migrate.upgrade(engine)
    with Session(engine) as s, s.begin():
        enc = m.Encoder(name="resnet50", weights_sha256="a" * 64, feature_dim=2048)
        clip = m.ClipModel(name="ViT-B-16", weights_sha256="b" * 64, embed_dim=512)
        s.add_all([enc, clip])
        s.flush()
        al = m.Aligner(encoder_id=enc.id, clip_model_id=clip.id, method="exact", d_in=2048, d_out=512)
        bank = m.ConceptBank(name="bench", version=1, clip_model_id=clip.id, dim=512)
        s.add_all([al, bank])
        s.flush()
        mon = m.Monitor(name="bench", encoder_id=enc.id, clip_model_id=clip.id, aligner_id=al.id, bank_id=bank.id)
        s.add(mon)
        s.flush()
        batch = m.Batch(monitor_id=mon.id, external_id="b", source_uri="bench", bank_id=bank.id)
        s.add(batch)
        s.flush()
        ids = {"monitor_id": mon.id, "batch_id": batch.id, "bank_id": bank.id}
    return engine, ids


def make_rows(n: int, dim: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = rng.uniform(-0.2, 0.4, (n, k)).astype(np.float32)
    uris = [f"s3://bucket/day-1/img-{i:07d}.jpg" for i in range(n)]
    sha = [f"{i:064x}" for i in range(n)]
    meta = [{"camera": i % 7, "prediction": "cat"} for i in range(n)]
    return vectors, scores, uris, sha, meta


def bench_copy(engine, ids, rows, chunk_size: int, writers: int) -> float:
    """The production path: ``ChunkWriter`` (as ``ingest`` uses it) storing chunks by ``store_chunk``."""
    vectors, scores, uris, sha, meta = rows
    started = time.perf_counter()
    with ChunkWriter(engine, writers=writers, **ids) as writer:
        for lo in range(0, len(uris), chunk_size):
            hi = lo + chunk_size
            writer.submit(ImageChunk(
                uris=uris[lo:hi], failure_reason=[None] * len(uris[lo:hi]), embeddings=vectors[lo:hi],
                scores=scores[lo:hi], sha256=sha[lo:hi], meta=meta[lo:hi],
                width=[224] * len(uris[lo:hi]), height=[224] * len(uris[lo:hi]),
            ))
    return time.perf_counter() - started


def bench_orm(engine, ids, rows, chunk_size: int) -> float:
    vectors, scores, uris, sha, meta = rows
    started = time.perf_counter()
    for lo in range(0, len(uris), chunk_size):
        with Session(engine) as s, s.begin():
            images = [
                m.Image(batch_id=ids["batch_id"], monitor_id=ids["monitor_id"], uri=uris[i], sha256=sha[i],
                        width=224, height=224, meta=meta[i], status="ok", dim=vectors.shape[1], embedding=vectors[i],
                        scores=scores[i].tolist())
                for i in range(lo, min(lo + chunk_size, len(uris)))
            ]
            s.add_all(images)
    return time.perf_counter() - started


def bench_execute_values(engine, ids, rows, chunk_size: int) -> float:
    vectors, scores, uris, sha, meta = rows
    started = time.perf_counter()
    for lo in range(0, len(uris), chunk_size):
        hi = min(lo + chunk_size, len(uris))
        with engine.begin() as conn:
            cur = conn.connection.dbapi_connection.cursor()
            execute_values(
                cur,
                "INSERT INTO image (batch_id, monitor_id, uri, sha256, width, height, meta, status, dim, embedding, "
                "scores) VALUES %s",
                [(ids["batch_id"], ids["monitor_id"], uris[i], sha[i], 224, 224, json.dumps(meta[i]), "ok",
                  vectors.shape[1], vector_literal(vectors[i]), scores[i].tolist()) for i in range(lo, hi)],
                template="(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::real[])", page_size=1000,
            )
            cur.close()
    return time.perf_counter() - started


def bench_score_layouts(engine, n: int, k: int) -> dict[str, float]:
    """One real[] per image against one row per (image, concept), both by binary COPY."""
    scores = np.random.default_rng(1).random((n, k)).astype(np.float32)
    out = {}
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_scores_array (image_id bigint PRIMARY KEY, scores real[])"))
        conn.execute(text("CREATE TABLE bench_scores_long (image_id bigint, concept int, score real, "
                          "PRIMARY KEY (image_id, concept))"))
    started = time.perf_counter()
    with engine.begin() as conn:
        copy_into(conn, "bench_scores_array",
                  [int_column("image_id", list(range(n)), bits=64), real_array_column("scores", scores)])
    out["scores_array_images_per_s"] = n / (time.perf_counter() - started)
    image_ids = np.repeat(np.arange(n), k)
    concepts = np.tile(np.arange(k), n)
    started = time.perf_counter()
    with engine.begin() as conn:
        cur = conn.connection.dbapi_connection.cursor()
        import io

        buf = io.StringIO()
        np.savetxt(buf, np.column_stack([image_ids, concepts, scores.ravel()]), fmt=["%d", "%d", "%.7g"],
                   delimiter="\t")
        buf.seek(0)
        cur.copy_expert("COPY bench_scores_long FROM STDIN", buf)
        cur.close()
    out["scores_long_images_per_s"] = n / (time.perf_counter() - started)
    with engine.connect() as conn:
        out["scores_array_bytes"] = conn.execute(text("SELECT pg_total_relation_size('bench_scores_array')")).scalar()
        out["scores_long_bytes"] = conn.execute(text("SELECT pg_total_relation_size('bench_scores_long')")).scalar()
    return out


def drop_database(server_url: str, engine, name: str) -> None:
    engine.dispose()
    admin = make_engine(server_url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--concepts", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=2_000)
    parser.add_argument("--writers", type=int, default=2, help="connections of the COPY path (ingest's store_writers)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each path, taking turns; the fastest counts")
    parser.add_argument("--hnsw", action="store_true", help="build the width's HNSW index before storing")
    args = parser.parse_args()

    paths = [("copy", lambda *a: bench_copy(*a, writers=args.writers)),
             ("copy_1_writer", lambda *a: bench_copy(*a, writers=1)),
             ("orm", bench_orm), ("execute_values", bench_execute_values)]
    with tempfile.TemporaryDirectory(prefix="t2c-bench-store-") as tmp:
        server = start_embedded(Path(tmp) / "pgdata", delete_on_exit=True)
        rows = make_rows(args.rows, args.dim, args.concepts)
        results = {"rows": args.rows, "dim": args.dim, "concepts": args.concepts, "chunk": args.chunk,
                   "writers": args.writers, "repeat": args.repeat, "hnsw_index": args.hnsw}
        runs: dict[str, list[float]] = {name: [] for name, _ in paths}
        for run in range(args.repeat):
            for name, fn in paths:
                database = f"bench_{name}_{run}"
                engine, ids = fresh_database(server, database)
                if args.hnsw:
                    with engine.begin() as conn:
                        ensure_hnsw_index(conn, args.dim)
                with console.status(f"run {run + 1}/{args.repeat}: storing {args.rows} rows by {name}"):
                    seconds = fn(engine, ids, rows, args.chunk)
                with engine.connect() as conn:
                    stored = conn.execute(text("SELECT count(*) FROM image")).scalar()
                    scored = conn.execute(text("SELECT count(*) FROM image WHERE scores IS NOT NULL")).scalar()
                if stored != args.rows or scored != args.rows:
                    sys.exit(f"{name} stored {stored} images and {scored} score rows, expected {args.rows}")
                runs[name].append(seconds)
                console.print(f"{name:>15}: {args.rows / seconds:10.0f} rows/s ({seconds:.2f} s)")
                if name == "copy" and run == 0:
                    layouts = bench_score_layouts(engine, args.rows, args.concepts)
                    results.update({k: round(v, 1) for k, v in layouts.items()})
                drop_database(server, engine, database)
        for name, seconds in runs.items():
            results[f"{name}_seconds"] = round(min(seconds), 3)
            results[f"{name}_rows_per_s"] = round(args.rows / min(seconds), 1)
            results[f"{name}_median_rows_per_s"] = round(args.rows / statistics.median(seconds), 1)
            results[f"{name}_runs_rows_per_s"] = [round(args.rows / s, 1) for s in seconds]
        results["copy_vs_orm"] = round(results["copy_rows_per_s"] / results["orm_rows_per_s"], 1)
        results["copy_1_writer_vs_orm"] = round(results["copy_1_writer_rows_per_s"] / results["orm_rows_per_s"], 1)
        results["copy_vs_execute_values"] = round(results["copy_rows_per_s"] / results["execute_values_rows_per_s"], 1)
        results["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
