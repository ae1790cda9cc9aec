"""Binary COPY encodes every column type exactly, and storing a batch twice stores nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from conftest import insert_monitor_rows
from sqlalchemy import text
from sqlalchemy.exc import DataError

from t2c_monitor.store import copy
from t2c_monitor.store.images import ChunkWriter, ImageChunk, store_chunk


def test_every_column_type_round_trips(engine):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3, 7)).astype(np.float32)
    arrays = rng.standard_normal((2, 5)).astype(np.float32)
    when = [datetime(2026, 11, 22, 9, 30, 15, 123456, tzinfo=UTC), None,
            datetime(1999, 12, 31, 23, 59, 59)]  # naive: taken as UTC; before the PG epoch
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TEMP TABLE t (i int, b bigint, s text, j jsonb, ts timestamptz, v vector, r real[])"
        ))
        copy.copy_into(conn, "t", [
            copy.int_column("i", [1, None, -7]),
            copy.int_column("b", [2**40, 0, None], bits=64),
            copy.text_column("s", ["plain", None, "ünïcödé ✓"]),
            copy.jsonb_column("j", [{"a": [1, 2]}, None, {"k": "ü"}]),
            copy.timestamptz_column("ts", when),
            copy.vector_column("v", vectors),
            copy.real_array_column("r", arrays, present=np.array([True, False, True])),
        ])
        rows = conn.execute(text("SELECT i, b, s, j, ts, v::text AS v, r FROM t")).all()
    assert [r.i for r in rows] == [1, None, -7]
    assert [r.b for r in rows] == [2**40, 0, None]
    assert [r.s for r in rows] == ["plain", None, "ünïcödé ✓"]
    assert [r.j for r in rows] == [{"a": [1, 2]}, None, {"k": "ü"}]
    assert rows[0].ts == when[0] and rows[1].ts is None
    assert rows[2].ts == when[2].replace(tzinfo=UTC)
    back = np.array([[float(x) for x in r.v.strip("[]").split(",")] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(back, vectors)
    np.testing.assert_array_equal(np.array(rows[0].r, dtype=np.float32), arrays[0])
    assert rows[1].r is None
    np.testing.assert_array_equal(np.array(rows[2].r, dtype=np.float32), arrays[1])


def test_json_values_round_trip_whatever_their_text(engine):
    values = [{"a": [1, 2]}, None, {}, [], {"s": 'x, "y", ', "t": "\\u0000"}, "plain", 3, {"k": "ü ✓"}, [{"n": None}]]
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE j (i int, j jsonb)"))
        copy.copy_into(conn, "j", [copy.int_column("i", list(range(len(values)))), copy.jsonb_column("j", values)])
        assert conn.execute(text("SELECT j FROM j ORDER BY i")).scalars().all() == values


def test_mismatched_columns_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        copy.encode([copy.int_column("a", [1, 2]), copy.int_column("b", [1])])
    with pytest.raises(ValueError, match="present marks"):
        copy.vector_column("v", np.zeros((1, 3)), present=np.array([True, True]))


@pytest.fixture
def monitor(engine) -> dict[str, int]:
    return insert_monitor_rows(engine, dim=16)


def _chunk(n: int, fail_every: int = 4, seed: int = 0) -> ImageChunk:
    rng = np.random.default_rng(seed)
    reasons = [f"truncated: image {i} cut short" if i % fail_every == 3 else None for i in range(n)]
    n_ok = sum(r is None for r in reasons)
    emb = rng.standard_normal((n_ok, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return ImageChunk(
        uris=[f"/inbox/img-{i:04d}.png" for i in range(n)],
        failure_reason=reasons,
        embeddings=emb,
        scores=rng.random((n_ok, 5)).astype(np.float32),
        sha256=[f"{i:064x}" for i in range(n)],
        width=[64] * n, height=[48] * n, n_bytes=[1000 + i for i in range(n)],
        meta=[{"camera": i % 3} for i in range(n)],
        captured_at=[datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(n)],
    )


def _counts(engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(conn.execute(text(
            "SELECT (SELECT count(*) FROM image WHERE status='ok'), (SELECT count(*) FROM image WHERE status='failed'),"
            " (SELECT count(*) FROM image WHERE scores IS NOT NULL) + (SELECT count(*) FROM image_score)"
        )).one())


def test_store_chunk_stores_vectors_scores_and_failures(engine, monitor):
    chunk = _chunk(40)
    with engine.begin() as conn:
        counts = store_chunk(conn, chunk=chunk, **monitor)
    assert (counts.ok, counts.failed, counts.skipped, counts.scores) == (30, 10, 0, 30)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT i.uri, i.embedding::text AS v, i.scores, i.meta, i.failure_reason, i.width "
            "FROM image i ORDER BY i.uri"
        )).all()
    ok_rows = [r for r in rows if r.failure_reason is None]
    stored = np.array([[float(x) for x in r.v.strip("[]").split(",")] for r in ok_rows], dtype=np.float32)
    np.testing.assert_array_equal(stored, chunk.embeddings)
    np.testing.assert_array_equal(np.array([r.scores for r in ok_rows], dtype=np.float32), chunk.scores)
    assert rows[3].failure_reason.startswith("truncated:") and rows[3].scores is None
    assert rows[5].meta == {"camera": 2} and rows[5].width == 64


def test_rerun_and_resume_store_nothing_twice(engine, monitor):
    full = _chunk(40)
    first_half = ImageChunk(
        uris=full.uris[:20], failure_reason=full.failure_reason[:20],
        embeddings=full.embeddings[: sum(r is None for r in full.failure_reason[:20])],
        scores=full.scores[: sum(r is None for r in full.failure_reason[:20])], sha256=full.sha256[:20],
    )
    with engine.begin() as conn:  # a run killed half way got this far
        store_chunk(conn, chunk=first_half, **monitor)
    assert _counts(engine) == (15, 5, 15)
    with engine.begin() as conn:  # the rerun completes it
        counts = store_chunk(conn, chunk=full, **monitor)
    assert (counts.ok, counts.failed, counts.skipped) == (15, 5, 20)
    assert _counts(engine) == (30, 10, 30)
    with engine.begin() as conn:  # and a third run changes nothing
        counts = store_chunk(conn, chunk=full, **monitor)
    assert (counts.ok, counts.failed, counts.skipped, counts.scores) == (0, 0, 40, 0)
    assert _counts(engine) == (30, 10, 30)


def test_a_failed_chunk_leaves_nothing_behind(engine, monitor):
    chunk = _chunk(8)
    with pytest.raises(RuntimeError, match="killed mid-chunk"), engine.begin() as conn:
        store_chunk(conn, chunk=chunk, **monitor)
        raise RuntimeError("killed mid-chunk")
    assert _counts(engine) == (0, 0, 0)
    with engine.begin() as conn:  # the staging tables are clean for the next chunk on this connection
        counts = store_chunk(conn, chunk=chunk, **monitor)
    assert counts.ok == 6 and counts.skipped == 0


def test_duplicate_content_is_recorded_as_failed_within_and_across_chunks(engine, monitor):
    first = _chunk(4, fail_every=99)
    with engine.begin() as conn:
        store_chunk(conn, chunk=first, **monitor)
    # a later chunk repeats image 1's content under a new name, and repeats itself
    rng = np.random.default_rng(5)
    later = ImageChunk(
        uris=["/inbox/copy-of-1.png", "/inbox/new.png", "/inbox/new-again.png"],
        failure_reason=[None, None, None],
        embeddings=rng.standard_normal((3, 16)).astype(np.float32),
        scores=rng.random((3, 5)).astype(np.float32),
        sha256=[first.sha256[1], "f" * 64, "f" * 64],
    )
    with engine.begin() as conn:
        counts = store_chunk(conn, chunk=later, **monitor)
    assert (counts.ok, counts.failed, counts.skipped, counts.scores) == (1, 2, 0, 1)
    with engine.connect() as conn:
        reasons = dict(conn.execute(
            text("SELECT uri, failure_reason FROM image WHERE failure_reason LIKE 'duplicate:%'")
        ).all())
    assert reasons == {
        "/inbox/copy-of-1.png": "duplicate: same content as /inbox/img-0001.png",
        "/inbox/new-again.png": "duplicate: same content as /inbox/new.png",
    }


def test_two_racing_runs_of_one_batch_store_each_image_once(engine, monitor):
    import threading

    chunk = _chunk(200)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with engine.begin() as conn:
                barrier.wait()
                store_chunk(conn, chunk=chunk, **monitor)
        except BaseException as exc:  # noqa: BLE001  surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert _counts(engine) == (150, 50, 150)


def test_read_matrix_returns_what_copy_wrote(engine):
    from t2c_monitor.store.copy import read_matrix

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, 24)).astype(np.float32)
    arrays = rng.standard_normal((50, 7)).astype(np.float32)
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE m (i int, v vector, r real[])"))
        copy.copy_into(conn, "m", [copy.int_column("i", list(range(50))), copy.vector_column("v", vectors),
                                   copy.real_array_column("r", arrays)])
        np.testing.assert_array_equal(read_matrix(conn, "SELECT v FROM m ORDER BY i"), vectors)
        np.testing.assert_array_equal(read_matrix(conn, "SELECT r FROM m WHERE i < %(n)s ORDER BY i", {"n": 10}),
                                      arrays[:10])
        assert read_matrix(conn, "SELECT r FROM m WHERE i < 0").shape == (0, 0)
        conn.execute(text("INSERT INTO m VALUES (99, '[1,2]', '{1,2}')"))
        with pytest.raises(ValueError, match="different lengths"):
            read_matrix(conn, "SELECT v FROM m")


def test_copy_blocks_streams_every_block_in_order(engine):
    def block(lo: int, hi: int) -> list[copy.Column]:
        return [copy.int_column("i", list(range(lo, hi))),
                copy.vector_column("v", np.arange(lo, hi, dtype=np.float32)[:, None].repeat(3, axis=1))]

    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE b (i int, v vector)"))
        assert copy.copy_blocks(conn, "b", (block(lo, hi) for lo, hi in [(0, 0), (0, 3), (3, 3), (3, 5)])) == 5
        assert copy.copy_blocks(conn, "b", iter([])) == 0
        rows = conn.execute(text("SELECT i, v::text AS v FROM b")).all()
    assert [(r.i, r.v) for r in rows] == [(i, f"[{i},{i},{i}]") for i in range(5)]
    with pytest.raises(ValueError, match="every block must have the columns"), engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE c (i int, j int)"))
        copy.copy_blocks(conn, "c", iter([[copy.int_column("i", [1])], [copy.int_column("j", [2])]]))


def test_copy_refused_half_way_stops_the_encoder_thread_and_raises_the_database_error(engine):
    """Blocks are encoded by a thread ahead of the server; when the server refuses a row (here a
    duplicate key in the second block) the error raised is the database's and no encoder thread
    is left behind."""
    import threading

    from sqlalchemy.exc import IntegrityError

    def blocks():
        for b in range(50):
            ids = [0] if b == 1 else list(range(10 * b + 1, 10 * b + 11))  # block 1 repeats id 0
            yield [copy.int_column("i", ids)]

    with pytest.raises(IntegrityError, match="duplicate key"), engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE u (i int PRIMARY KEY)"))
        conn.execute(text("INSERT INTO u VALUES (0)"))
        copy.copy_blocks(conn, "u", blocks())
    assert not [t for t in threading.enumerate() if t.name == "t2c-copy-encode"]


def test_chunks_longer_than_a_block_store_the_right_vector_and_scores_on_each_row(engine, monitor):
    """Rows are encoded a block at a time; failures, skipped rows and block edges must not shift them."""
    n = 700
    rng = np.random.default_rng(7)
    reasons = [f"truncated: {i}" if i < 300 or i % 5 == 0 else None for i in range(n)]  # first blocks all failed
    n_ok = sum(r is None for r in reasons)
    chunk = ImageChunk(
        uris=[f"/inbox/{i:04d}.png" for i in range(n)], failure_reason=reasons,
        embeddings=rng.standard_normal((n_ok, 16)).astype(np.float32), scores=rng.random((n_ok, 5)).astype(np.float32),
        sha256=[f"{i:064x}" for i in range(n)], meta=[{"i": i} for i in range(n)],
    )
    ok_uris = [u for u, r in zip(chunk.uris, reasons, strict=True) if r is None]
    ok_before = sum(r is None for r in reasons[:450])
    half = ImageChunk(  # a run killed half way stored the first 450
        uris=chunk.uris[:450], failure_reason=reasons[:450], embeddings=chunk.embeddings[:ok_before],
        scores=chunk.scores[:ok_before], sha256=chunk.sha256[:450], meta=chunk.meta[:450],
    )
    with engine.begin() as conn:
        store_chunk(conn, chunk=half, **monitor)
    with engine.begin() as conn:
        counts = store_chunk(conn, chunk=chunk, **monitor)
    assert (counts.ok, counts.failed, counts.skipped) == (sum(r is None for r in reasons[450:]), 250 - 200, 450)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT i.uri, i.meta, i.embedding::text AS v, i.scores "
            "FROM image i WHERE i.status = 'ok' ORDER BY i.uri"
        )).all()
    assert [r.uri for r in rows] == ok_uris
    assert [r.meta for r in rows] == [m for m, r in zip(chunk.meta, reasons, strict=True) if r is None]
    stored = np.array([[float(x) for x in r.v.strip("[]").split(",")] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(stored, chunk.embeddings)
    np.testing.assert_array_equal(np.array([r.scores for r in rows], dtype=np.float32), chunk.scores)
    assert _counts(engine) == (n_ok, n - n_ok, n_ok)


def _second_bank(engine, monitor: dict[str, int]) -> int:
    """Another bank (a new version of the monitor's), as after the monitor's bank changed."""
    with engine.begin() as conn:
        return conn.execute(text(
            "INSERT INTO concept_bank (name, version, clip_model_id, dim) SELECT name, version + 1, clip_model_id, dim "
            "FROM concept_bank WHERE id = :b RETURNING id"), {"b": monitor["bank_id"]}).scalar_one()


def test_scores_go_in_the_image_row_against_the_batch_bank_and_never_mix_banks(engine, monitor):
    """A batch takes the bank of its first scored chunk (it was opened without one); a run resumed
    with another bank stores its scores as image_score rows of that bank, and each bank reads back
    only its own scores."""
    from t2c_monitor.store.scores import batch_scores

    full = _chunk(40)
    n_first = sum(r is None for r in full.failure_reason[:20])
    first = ImageChunk(uris=full.uris[:20], failure_reason=full.failure_reason[:20],
                       embeddings=full.embeddings[:n_first], scores=full.scores[:n_first], sha256=full.sha256[:20])
    with engine.begin() as conn:
        assert store_chunk(conn, chunk=first, **monitor).scores == n_first
    with engine.connect() as conn:
        assert conn.execute(text("SELECT bank_id FROM batch")).scalar_one() == monitor["bank_id"]
        assert conn.execute(text("SELECT count(*) FROM image_score")).scalar_one() == 0
    new_bank = _second_bank(engine, monitor)
    with engine.begin() as conn:
        counts = store_chunk(conn, chunk=full, **{**monitor, "bank_id": new_bank})
    assert (counts.ok, counts.skipped, counts.scores) == (full.n_ok - n_first, 20, full.n_ok - n_first)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT bank_id FROM batch")).scalar_one() == monitor["bank_id"]  # kept
        np.testing.assert_array_equal(batch_scores(conn, monitor["batch_id"], monitor["bank_id"]),
                                      full.scores[:n_first])
        np.testing.assert_array_equal(batch_scores(conn, monitor["batch_id"], new_bank), full.scores[n_first:])
        assert conn.execute(text("SELECT count(*) FROM image_score WHERE bank_id = :b"),
                            {"b": new_bank}).scalar_one() == full.n_ok - n_first


def test_replace_scores_fills_the_image_rows_for_the_batch_bank_and_image_score_for_others(engine, monitor):
    from t2c_monitor.store.scores import batch_scores, ok_image_ids, replace_scores

    chunk = _chunk(12)
    with engine.begin() as conn:
        store_chunk(conn, chunk=ImageChunk(uris=chunk.uris, failure_reason=chunk.failure_reason,
                                           embeddings=chunk.embeddings, scores=chunk.scores), **monitor)
        conn.execute(text("UPDATE image SET scores = NULL WHERE id = (SELECT min(id) FROM image WHERE status='ok')"))
    new_bank = _second_bank(engine, monitor)
    with engine.begin() as conn:
        ids = ok_image_ids(conn, monitor["batch_id"])
        assert len(batch_scores(conn, monitor["batch_id"], monitor["bank_id"])) == len(ids) - 1  # a partial set
        assert len(batch_scores(conn, monitor["batch_id"], new_bank)) == 0
        replace_scores(conn, monitor["batch_id"], monitor["bank_id"], ids, chunk.scores + 1)
        replace_scores(conn, monitor["batch_id"], new_bank, ids, chunk.scores + 2)
    with engine.connect() as conn:
        np.testing.assert_array_equal(batch_scores(conn, monitor["batch_id"], monitor["bank_id"]), chunk.scores + 1)
        np.testing.assert_array_equal(batch_scores(conn, monitor["batch_id"], new_bank), chunk.scores + 2)
        assert conn.execute(text("SELECT count(DISTINCT bank_id) FROM image_score")).scalar_one() == 1


def _slice(chunk: ImageChunk, lo: int, hi: int) -> ImageChunk:
    ok_before = sum(r is None for r in chunk.failure_reason[:lo])
    ok_in = sum(r is None for r in chunk.failure_reason[lo:hi])
    return ImageChunk(
        uris=chunk.uris[lo:hi], failure_reason=chunk.failure_reason[lo:hi],
        embeddings=chunk.embeddings[ok_before : ok_before + ok_in], scores=chunk.scores[ok_before : ok_before + ok_in],
        sha256=chunk.sha256[lo:hi], meta=chunk.meta[lo:hi],
    )


def _stored_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT uri, status, failure_reason, embedding::text, scores, meta::text FROM image ORDER BY uri"
        ))]


@pytest.mark.parametrize("writers", [1, 3])
def test_chunk_writer_stores_what_store_chunk_stores_whatever_the_writers(engine, monitor, writers):
    full = _chunk(90)
    with engine.begin() as conn:
        store_chunk(conn, chunk=full, **monitor)
    expected = _stored_rows(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM image"))
    with ChunkWriter(engine, writers=writers, **monitor) as writer:
        for lo in range(0, 90, 20):  # five chunks, up to three stored at once
            writer.submit(_slice(full, lo, lo + 20))
    assert (writer.counts.ok, writer.counts.failed, writer.counts.skipped) == (68, 22, 0)
    assert _stored_rows(engine) == expected
    with ChunkWriter(engine, writers=writers, **monitor) as again:  # a rerun stores nothing twice
        for lo in range(0, 90, 30):
            again.submit(_slice(full, lo, lo + 30))
    assert (again.counts.ok, again.counts.skipped) == (0, 90)
    assert _stored_rows(engine) == expected


def test_chunk_writer_raises_a_chunk_error_and_keeps_the_other_chunks(engine, monitor):
    full = _chunk(40)
    bad = _slice(full, 20, 40)
    bad.meta = [{"note": "nul \x00 byte"}] * 20  # jsonb refuses \u0000: the server rejects this chunk
    with pytest.raises(DataError, match="unsupported Unicode escape sequence"), \
            ChunkWriter(engine, writers=2, **monitor) as writer:
        writer.submit(_slice(full, 0, 20))
        writer.submit(bad)
    assert [r[0] for r in _stored_rows(engine)] == full.uris[:20]
    with pytest.raises(ValueError, match="writers must be at least 1"):
        ChunkWriter(engine, writers=0, **monitor)
