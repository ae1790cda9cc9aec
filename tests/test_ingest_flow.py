"""The ingest flow under a real Prefect run (prefect_test_harness), on one worker and on Dask."""

from __future__ import annotations

import numpy as np
from conftest import write_images
from sqlalchemy import text


def _stored(db) -> dict[str, tuple]:
    with db.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT i.uri, i.status, i.failure_reason, i.embedding::text AS v, i.scores FROM image i"
        )).all()
    return {r.uri: (r.status, r.failure_reason, r.v, r.scores) for r in rows}


def test_flow_run_ingests_a_batch_and_a_rerun_adds_nothing(prefect_harness, applied_monitor, tmp_path):
    from flows.ingest import IngestParams, ingest_flow
    from t2c_monitor.ingest import load_runtime

    write_images(tmp_path / "day-1", 12, seed=2)
    (tmp_path / "day-1" / "broken.jpg").write_text("not a jpeg")
    params = IngestParams(source=str(tmp_path / "day-1"), monitor="tiny")
    summary = ingest_flow(params)
    assert (summary["status"], summary["n_ok"], summary["n_failed"]) == ("stored", 12, 1)
    assert summary["timings"]["encode"] > 0 and summary["timings"]["total"] > 0

    stored = _stored(applied_monitor)
    assert stored[str(tmp_path / "day-1" / "broken.jpg")][1].startswith("not an image")
    runtime = load_runtime(applied_monitor, "tiny", device="cpu")
    from PIL import Image

    first = tmp_path / "day-1" / "img-0000.png"
    vector, _ = runtime.embed(runtime.encoder.preprocess(Image.open(first).convert("RGB"))[None])
    np.testing.assert_allclose(
        np.array([float(x) for x in stored[str(first)][2].strip("[]").split(",")]), vector[0], atol=1e-5
    )

    again = ingest_flow(params)
    assert again["id"] == summary["id"] and again["n_images"] == 13
    assert len(_stored(applied_monitor)) == 13


def test_two_dask_workers_store_the_same_rows_as_one(prefect_harness, applied_monitor, tmp_path):
    from flows.ingest import IngestParams, ingest_flow

    write_images(tmp_path / "day-3", 20, seed=9)
    (tmp_path / "day-3" / "empty.png").write_bytes(b"")
    one = ingest_flow(IngestParams(source=str(tmp_path / "day-3"), monitor="tiny", batch_id="one", workers=1))
    rows_one = _stored(applied_monitor)
    with applied_monitor.engine.begin() as conn:
        conn.execute(text("DELETE FROM batch"))
    two = ingest_flow(IngestParams(source=str(tmp_path / "day-3"), monitor="tiny", batch_id="two", workers=2))
    rows_two = _stored(applied_monitor)
    assert (one["n_ok"], one["n_failed"]) == (two["n_ok"], two["n_failed"]) == (20, 1)
    assert rows_one.keys() == rows_two.keys()
    for uri, (status, reason, vector, scores) in rows_one.items():
        status2, reason2, vector2, scores2 = rows_two[uri]
        assert (status, reason) == (status2, reason2)
        if vector is not None:
            np.testing.assert_allclose(
                [float(x) for x in vector.strip("[]").split(",")], [float(x) for x in vector2.strip("[]").split(",")],
                atol=1e-5,
            )
            np.testing.assert_allclose(scores, scores2, atol=1e-5)


def test_a_run_that_fails_part_way_marks_its_batch_failed_and_a_rerun_completes_it(
        prefect_harness, applied_monitor, tiny_monitor_dir, tmp_path):
    """The encoder's weights go missing after the batch is planned: the run fails, the batch says
    `failed` with the error (not `embedding` for ever), and a rerun once they are back stores it."""
    import json
    import shutil

    import pytest
    from conftest import apply_tiny
    from typer.testing import CliRunner

    from flows.ingest import IngestParams, ingest_flow
    from t2c_monitor.cli import app
    from t2c_monitor.errors import T2CError

    models = tmp_path / "models"
    shutil.copytree(tiny_monitor_dir, models)
    apply_tiny(applied_monitor, models, tmp_path / "config")
    write_images(tmp_path / "day", 6, seed=5)
    params = IngestParams(source=str(tmp_path / "day"), monitor="tiny", batch_id="day")
    (models / "encoder.safetensors").rename(models / "moved")
    with pytest.raises(T2CError):
        ingest_flow(params)
    with applied_monitor.engine.connect() as conn:
        status, error = conn.execute(text("SELECT status, error FROM batch WHERE external_id = 'day'")).one()
    assert status == "failed" and "encoder.safetensors" in error, error
    listed = CliRunner().invoke(app, ["batches", "list", "--monitor", "tiny", "--json"])  # what the user sees
    (row,) = json.loads(listed.stdout)["batches"]
    assert (row["external_id"], row["status"], row["error"]) == ("day", "failed", error)

    (models / "moved").rename(models / "encoder.safetensors")
    summary = ingest_flow(params)
    assert (summary["status"], summary["n_ok"]) == ("stored", 6)
