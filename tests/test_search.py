"""Search over stored images: concept-logic constraints parse or say what is wrong; a query's counts and
hits equal the same filter computed in numpy; statistics are cached per corpus and refreshed when it
grows; text search through the HNSW index returns the requested count even when the corpus is
narrowed (pgvector 0.6 filters after its index scan); user text reaches SQL only as bound values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_images
from sqlalchemy import text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from t2c_monitor.errors import ConfigError
from t2c_monitor.search.query import Constraint, parse_constraint, parse_constraints, parse_where
from t2c_monitor.search.use_cases import concept_search, search_index, text_search
from t2c_monitor.store import models as m
from t2c_monitor.store.monitors import get_monitor

BIG, SMALL = 300, 40  # images of batches "big" and "small"


@pytest.mark.parametrize(("written", "expected"), [
    ("night:+2", Constraint("night", 2.0, "+")),
    ("snow:-0", Constraint("snow", 0.0, "-")),
    ("at night:+1.5", Constraint("at night", 1.5, "+")),
    ("text:a blurry red star:+1", Constraint("a blurry red star", 1.0, "+", free_text=True)),
    ("text:ratio 1:2 picture:- 0.5", Constraint("ratio 1:2 picture", 0.5, "-", free_text=True)),
])
def test_constraints_parse(written, expected):
    assert parse_constraint(written) == expected
    assert parse_constraint(expected.label) == expected  # a label is written back the way it parses


@pytest.mark.parametrize(("written", "says"), [
    ("night", "no ':' bound"),
    ("night:2", "must start with"),
    ("night:*2", "must start with"),
    ("night:+two", "is not a number"),
    ("night:+nan", "finite"),
    ("night:+inf", "finite"),
    (":+1", "no ':' bound"),
    ("text::+1", "names no concept"),
    ("  :+1", "names no concept"),
])
def test_bad_constraints_say_what_is_wrong(written, says):
    with pytest.raises(ConfigError, match=says):
        parse_constraint(written)


def test_query_and_where_limits():
    with pytest.raises(ConfigError, match="at least one"):
        parse_constraints([])
    with pytest.raises(ConfigError, match="at most"):
        parse_constraints([f"c{i}:+0" for i in range(17)])
    assert parse_where(["label=cat", "note=a=b"]) == {"label": "cat", "note": "a=b"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_where(["label"])


@pytest.fixture
def corpus_db(applied_monitor):
    """The tiny monitor with two batches of synthetic unit vectors: half of them near a bank concept,
    so each concept's similarity has a tail to find; every image carries a label and a parity."""
    db = applied_monitor
    with db.session() as session:
        record = get_monitor(session, "tiny")
    rng = np.random.default_rng(0)
    with Session(db.engine) as s, s.begin():
        for name, n in (("big", BIG), ("small", SMALL)):
            batch = m.Batch(monitor_id=record.id, external_id=name, source_uri=f"/inbox/{name}", status="stored")
            s.add(batch)
            s.flush()
            vectors = rng.standard_normal((n, record.concept_vectors.shape[1])).astype(np.float32)
            near = rng.integers(0, len(record.concept_names), n)
            vectors[::2] += 3 * record.concept_vectors[near[::2]] * np.sqrt(vectors.shape[1]) / 4
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            s.add_all([m.Image(batch_id=batch.id, monitor_id=record.id, uri=f"/inbox/{name}/{i}.png",
                               sha256=f"{name}-{i}", status="ok", dim=vectors.shape[1], embedding=v,
                               meta={"label": "cat" if i % 3 else "dog", "odd": bool(i % 2)})
                       for i, v in enumerate(vectors)])
    return db, record


def _stored(db, record, where_sql: str = "TRUE", params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    with db.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT i.id, i.embedding FROM image i JOIN batch b ON b.id = i.batch_id "
                                 f"WHERE i.monitor_id = :mid AND {where_sql} ORDER BY i.id"),
                            {"mid": record.id, **(params or {})}).all()
    vectors = np.stack([np.asarray(json.loads(r.embedding), dtype=np.float64) for r in rows])
    return np.array([r.id for r in rows]), vectors


def _numpy_filter(vectors: np.ndarray, queries: np.ndarray, constraints: list[Constraint]
                  ) -> tuple[list[int], np.ndarray]:
    sims = vectors @ queries.T.astype(np.float64)
    z = (sims - sims.mean(0)) / sims.std(0)
    keep = np.ones(len(vectors), bool)
    counts = [len(vectors)]
    for j, c in enumerate(constraints):
        keep &= z[:, j] >= c.k if c.sign == "+" else z[:, j] <= -c.k
        counts.append(int(keep.sum()))
    return counts, keep


def test_concept_logic_equals_the_same_filter_in_numpy(corpus_db, tiny_clip):
    db, record = corpus_db
    constraints = parse_constraints(["red:+0.5", "at night:-0", "text:a green picture:+0.2"])
    result = concept_search(db, "tiny", constraints, limit=1000, clip=tiny_clip)
    ids, vectors = _stored(db, record)
    from t2c_monitor.search.use_cases import constraint_vectors

    queries = constraint_vectors(db, record, constraints, clip=tiny_clip)
    counts, keep = _numpy_filter(vectors, queries, constraints)
    assert result.counts == counts
    assert 0 < result.n_matched < len(ids) // 2  # the query narrows, and something is left
    assert {h.image_id for h in result.hits} == set(ids[keep].tolist())
    ranks = [h.rank_score for h in result.hits]
    assert ranks == sorted(ranks, reverse=True)
    np.testing.assert_allclose(result.means, (vectors @ queries.T).mean(0), atol=1e-5)

    # narrowed by batch and metadata: the statistics are the narrowed corpus's own
    narrowed = concept_search(db, "tiny", constraints, limit=1000, batches=["small"], where={"label": "cat"},
                              clip=tiny_clip)
    ids, vectors = _stored(db, record, "b.external_id = 'small' AND i.meta->>'label' = 'cat'")
    counts, keep = _numpy_filter(vectors, queries, constraints)
    assert narrowed.counts == counts and narrowed.counts[0] == len(ids) < SMALL
    assert {h.image_id for h in narrowed.hits} == set(ids[keep].tolist())
    # a boolean metadata value matches as JSON writes it
    odd = concept_search(db, "tiny", constraints[:1], limit=5, where={"odd": "true"})
    assert odd.counts[0] == (BIG // 2) + (SMALL // 2) and len(odd.hits) == 5


def test_statistics_are_cached_until_the_corpus_changes(corpus_db, tmp_path):
    db, record = corpus_db
    constraints = parse_constraints(["red:+1", "blue:-0.5"])
    first = concept_search(db, "tiny", constraints)
    again = concept_search(db, "tiny", constraints)
    assert (first.stats_computed, again.stats_computed) == (2, 0)
    assert again.counts == first.counts
    with Session(db.engine) as s, s.begin():
        batch_id = s.execute(text("SELECT id FROM batch WHERE external_id = 'small'")).scalar_one()
        s.add(m.Image(batch_id=batch_id, monitor_id=record.id, uri="/inbox/late.png", sha256="late", status="ok",
                      dim=len(record.concept_vectors[0]), embedding=record.concept_vectors[0]))
    grown = concept_search(db, "tiny", constraints)
    assert grown.stats_computed == 2 and grown.counts[0] == first.counts[0] + 1
    with db.engine.connect() as conn:  # the entries of the corpus before it grew are gone
        assert conn.execute(text("SELECT count(*) FROM search_stat")).scalar_one() == 2


def test_user_text_is_only_ever_a_bound_value(corpus_db, tiny_clip):
    db, _ = corpus_db
    nasty = "x'); DROP TABLE image; -- \"; SELECT 1; $$"
    result = concept_search(db, "tiny", [Constraint(nasty, 0.0, "+", free_text=True)], clip=tiny_clip,
                            where={nasty: nasty})
    assert result.counts == [0, 0] and "no stored images" in result.notes[0]  # no image has that metadata
    result = concept_search(db, "tiny", [Constraint(nasty, 0.0, "+", free_text=True)], clip=tiny_clip)
    assert result.counts[0] == BIG + SMALL
    found = text_search(db, "tiny", nasty, top=3, clip=tiny_clip)
    assert len(found.hits) == 3
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM image")).scalar_one() == BIG + SMALL
    with pytest.raises(ConfigError, match="did you mean 'red'"):
        concept_search(db, "tiny", parse_constraints(["redd:+1"]))
    with pytest.raises(ConfigError, match="no stored batch 'nope'"):
        concept_search(db, "tiny", parse_constraints(["red:+1"]), batches=["nope"])


def test_filtered_text_search_returns_the_requested_count(corpus_db, tiny_clip):
    db, record = corpus_db
    unindexed = text_search(db, "tiny", "a red picture", top=20, clip=tiny_clip, batches=["small"])
    assert unindexed.method == "exact" and "no search index" in unindexed.notes[0]
    info = search_index(db, "tiny", build=True)
    assert info.exists and info.rows == BIG + SMALL and info.bytes > 0 and info.build_seconds is not None

    # the planner takes the index for the whole corpus; narrowed to a batch of 40 (13% of the rows), an
    # index scan with the default ef_search finds too few of them, and the search widens until it has 20
    whole = text_search(db, "tiny", "a red picture", top=20, clip=tiny_clip, recall=True)
    assert whole.method == "hnsw" and len(whole.hits) == 20 and whole.recall >= 0.9
    for narrowed in ({"batches": ["small"]}, {"where": {"label": "dog"}, "batches": ["small"]}):
        found = text_search(db, "tiny", "a red picture", top=20, clip=tiny_clip, recall=True, **narrowed)
        _, vectors = _stored(db, record, "b.external_id = 'small'" + (
            " AND i.meta->>'label' = 'dog'" if "where" in narrowed else ""))
        if "where" not in narrowed:  # 40 of 340 rows: the default ef_search (40) finds about 5; it had to widen
            assert found.method == "hnsw" and found.ef_search > 40
        assert len(found.hits) == min(20, len(vectors))
        assert all(h.batch == "small" for h in found.hits)
        assert found.recall >= 0.9
        sims = [h.similarities[0] for h in found.hits]
        assert sims == sorted(sims, reverse=True)
    exact = text_search(db, "tiny", "a red picture", top=20, clip=tiny_clip, exact=True, batches=["small"])
    assert exact.method == "exact" and len(exact.hits) == 20
    assert not search_index(db, "tiny", drop=True).exists


def test_cli_search_json_and_contact_sheet(corpus_db, tmp_path, monkeypatch):
    from t2c_monitor.cli import app

    db, record = corpus_db
    write_images(tmp_path / "real", 3)  # hits whose files exist get thumbnails
    with Session(db.engine) as s, s.begin():
        s.execute(text("UPDATE image SET uri = :uri WHERE id = (SELECT min(id) FROM image)"),
                  {"uri": str(next((tmp_path / "real").glob("*.png")))})
    runner = CliRunner()
    out = runner.invoke(app, ["search", "--monitor", "tiny", "red:+0.5", "at night:-0", "--top", "7", "--json",
                              "--html", str(tmp_path / "sheet.html")])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    assert len(payload["hits"]) == min(7, payload["matched"]) and len(payload["counts"]) == 3
    page = (tmp_path / "sheet.html").read_text()
    assert "red:+0.5" in page and "Images left after each constraint" in page
    out = runner.invoke(app, ["search", "--monitor", "tiny", "red:+x"])
    assert out.exit_code == 2 and "is not a number" in out.output
    out = runner.invoke(app, ["search", "--monitor", "tiny", "--index", "show", "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["exists"] is False
