"""Vectors of every supported CLIP width round-trip exactly and rank like numpy."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import insert_monitor_rows
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from t2c_monitor.store import models as m
from t2c_monitor.store.vectors import ensure_hnsw_index, nearest_images

# the world CLIP, open_clip RN50/ViT-B (1024/512), ViT-L (768), ViT-H (1024), ViT-bigG (1280), and the HNSW limit
DIMS = [32, 512, 768, 1024, 1280, 2000]


@pytest.fixture
def monitor_batch(engine) -> tuple[int, int]:
    ids = insert_monitor_rows(engine, dim=512)
    return ids["monitor_id"], ids["batch_id"]


def _store(engine, monitor_id: int, batch_id: int, vectors: np.ndarray, tag: str) -> list[int]:
    with Session(engine) as s, s.begin():
        rows = [
            m.Image(batch_id=batch_id, monitor_id=monitor_id, uri=f"{tag}-{i}.png", sha256=f"{tag}-{i}",
                    status="ok", dim=vectors.shape[1], embedding=v)
            for i, v in enumerate(vectors)
        ]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


@pytest.mark.parametrize("dim", DIMS)
def test_round_trip_and_cosine_order(engine, monitor_batch, dim):
    monitor_id, batch_id = monitor_batch
    rng = np.random.default_rng(dim)
    vectors = rng.standard_normal((60, dim)).astype(np.float32)
    ids = _store(engine, monitor_id, batch_id, vectors, tag=f"d{dim}")
    # vectors of another width in the same table must never be mixed into the answer
    _store(engine, monitor_id, batch_id, rng.standard_normal((5, 16)).astype(np.float32), tag=f"o{dim}")

    with Session(engine) as s:
        back = s.execute(select(m.Image.id, m.Image.embedding).where(m.Image.dim == dim).order_by(m.Image.id)).all()
    assert [r.id for r in back] == ids
    np.testing.assert_array_equal(np.stack([np.asarray(r.embedding, dtype=np.float32) for r in back]), vectors)

    query = rng.standard_normal(dim).astype(np.float32)
    cos = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    expected_order = [ids[i] for i in np.argsort(-cos, kind="stable")]
    with Session(engine) as s:
        got = nearest_images(s, query, k=len(ids), monitor_id=monitor_id)
    assert [i for i, _ in got] == expected_order
    np.testing.assert_allclose([d for _, d in got], np.sort(1 - cos), atol=1e-5)


def test_hnsw_index_per_width_is_used(engine, monitor_batch):
    monitor_id, batch_id = monitor_batch
    vectors = np.random.default_rng(0).standard_normal((300, 512)).astype(np.float32)
    ids = _store(engine, monitor_id, batch_id, vectors, tag="h")
    with engine.begin() as conn:
        name = ensure_hnsw_index(conn, 512)
        ensure_hnsw_index(conn, 512)  # idempotent
    with Session(engine) as s, s.begin():
        s.execute(text("SET LOCAL enable_seqscan = off"))
        s.execute(text("SET LOCAL enable_bitmapscan = off"))
        s.execute(text("SET LOCAL enable_sort = off"))
        plan = "\n".join(
            s.execute(
                text(
                    "EXPLAIN SELECT id FROM image WHERE dim = 512 AND status = 'ok' "
                    "ORDER BY (embedding::vector(512)) <=> CAST(:q AS vector(512)) LIMIT 5"
                ),
                {"q": "[" + ",".join(["0.1"] * 512) + "]"},
            ).scalars()
        )
        assert name in plan
        top = nearest_images(s, vectors[7], k=1, monitor_id=monitor_id)
    assert top[0][0] == ids[7] and top[0][1] == pytest.approx(0.0, abs=1e-5)


def test_bad_vectors_are_refused(engine):
    with Session(engine) as s:
        with pytest.raises(ValueError, match="dim must be"):
            nearest_images(s, np.zeros(2001))
        with pytest.raises(ValueError, match="finite"):
            nearest_images(s, np.array([np.nan, 1.0]))
        with pytest.raises(ValueError, match="k must be"):
            nearest_images(s, np.ones(4), k=0)
