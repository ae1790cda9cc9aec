"""Retention: the vectors of old images dropped, their rows, scores, batches and audits kept; audits of old
windows still test every concept; the active baseline's batches keep their vectors; a rerun drops nothing
more; the command, the config key and the scheduled deployment."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from conftest import apply_tiny, write_images
from sqlalchemy import text

from t2c_monitor.audit import build_baseline, run_audit
from t2c_monitor.errors import ConfigError
from t2c_monitor.retention import apply_retention


def _age(db, batches: list[str], days: int) -> None:
    """Make the batches' images look ``days`` old (as if stored then)."""
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE image SET created_at = now() - make_interval(days => :d) WHERE batch_id IN "
                          "(SELECT id FROM batch WHERE external_id = ANY(:b))"), {"d": days, "b": batches})


def _counts(db) -> dict[str, tuple[int, int, int]]:
    """batch -> (images, with a vector, with scores)."""
    with db.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT b.external_id, count(*), count(i.embedding), count(i.scores) FROM image i "
            "JOIN batch b ON b.id = i.batch_id WHERE i.status = 'ok' GROUP BY 1")).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_old_vectors_go_scores_and_audits_stay(monitored, tmp_path):
    db = monitored
    build_baseline(db, "tiny", batches=["ref-1", "ref-2"], reservoir_size=200)
    before = run_audit(db, "tiny", batches=["dark"])
    assert before.flagged and before.explanation is not None
    _age(db, ["ref-1", "clean", "dark"], 100)  # ref-1 is in the active baseline: its vectors stay

    (plan,) = apply_retention(db, ["tiny"], older_than=timedelta(days=30), dry_run=True)
    assert (plan.dropped, plan.dry_run) == (120, True) and plan.vector_bytes > 120 * 4 * 32
    assert _counts(db)["dark"] == (60, 60, 60), "a dry run drops nothing"

    (done,) = apply_retention(db, ["tiny"], older_than=timedelta(days=30), chunk=50)  # three chunks
    assert done.dropped == 120 and not done.dry_run and done.table_bytes_after > 0
    counts = _counts(db)
    assert counts["clean"] == counts["dark"] == (60, 0, 60), "vectors dropped, every row and score kept"
    assert counts["ref-1"] == counts["ref-2"] == (60, 60, 60), "the baseline's and recent batches keep theirs"
    with db.engine.connect() as conn:
        stamped = conn.execute(text("SELECT count(*) FROM image WHERE embedding_dropped_at IS NOT NULL")).scalar()
        audits = conn.execute(text("SELECT count(*) FROM audit")).scalar()
    assert stamped == 120 and audits == 1
    (again,) = apply_retention(db, ["tiny"], older_than=timedelta(days=30))
    assert again.dropped == 0, "a rerun has nothing left to drop"

    after = run_audit(db, "tiny", batches=["dark"])  # an old window: every concept still tested
    assert [f.name for f in after.flagged] == [f.name for f in before.flagged]
    assert after.n_current == 60 and after.explanation is None and "retention" in after.note
    from t2c_monitor.ingest import ingest

    ingest(db, "tiny", write_images(tmp_path / "fresh", 30, seed=7)[0].parent, batch_id="fresh")
    mixed = run_audit(db, "tiny", batches=["dark", "fresh"])  # part of the window still has vectors
    assert mixed.n_current == 90 and mixed.explanation is not None
    from t2c_monitor.reports.dataset import dataset_report

    with pytest.raises(ConfigError, match="Retention dropped the vectors of 60 images"):
        dataset_report(db, "tiny", batches=["dark", "fresh"])  # one batch without vectors, one with

    from t2c_monitor.store.vectors import nearest_images

    with db.session() as session:
        found = {i for i, _ in nearest_images(session, [1.0] + [0.0] * 31, k=500)}
        dropped = set(session.execute(text("SELECT id FROM image WHERE embedding IS NULL AND status = 'ok'"))
                      .scalars())
    assert found and not (found & dropped), "a search never returns an image without its vector"

    rebuilt = build_baseline(db, "tiny", batches=["clean", "fresh"], reservoir_size=100)  # half without vectors
    assert rebuilt.n_images == 90, "every scored image counts, with or without its vector"
    with pytest.raises(ConfigError, match="Retention dropped every aligned vector .* \\(clean, dark\\)"):
        build_baseline(db, "tiny", batches=["clean", "dark"])


def test_a_monitor_without_retention_keeps_its_vectors_and_short_ages_are_refused(monitored):
    _age(monitored, ["clean"], 400)
    (outcome,) = apply_retention(monitored, ["tiny"])
    assert outcome.keep is None and outcome.dropped == 0 and _counts(monitored)["clean"] == (60, 60, 60)
    with pytest.raises(ConfigError, match="at least 1d"):
        apply_retention(monitored, ["tiny"], older_than=timedelta(hours=6))


def test_retention_config_command_and_scheduled_deployment(monitored, tiny_monitor_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flows.deployments import deployment_specs
    from t2c_monitor.cli import app
    from t2c_monitor.monitors import parse_monitors
    from t2c_monitor.store.monitors import get_monitor

    with pytest.raises(ConfigError, match=r"retention\.vectors: .*at least 1d"):
        parse_monitors({"monitors": [{"name": "m", "encoder": "timm:x", "clip": "open_clip:y", "aligner": "a",
                                      "bank": "b.yaml", "retention": {"vectors": "12h"}}]}, base=tmp_path)
    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config", retention={"vectors": "30d", "cron": "0 4 * * *"})
    with monitored.session() as session:
        config = get_monitor(session, "tiny").config
    (spec,) = [s for s in deployment_specs(config) if s["name"] == "retention-tiny"]
    assert spec["schedule"] == {"cron": "0 4 * * *", "timezone": "UTC"}
    assert spec["entrypoint"] == "flows.retention.retention_flow"

    _age(monitored, ["dark"], 45)
    run = CliRunner().invoke(app, ["retention", "apply", "--dry-run", "--json"])
    assert run.exit_code == 0, run.output
    (planned,) = json.loads(run.stdout.strip().splitlines()[-1])["monitors"]
    assert (planned["monitor"], planned["dropped"], planned["keep"]) == ("tiny", 60, 30 * 86400.0)
    run = CliRunner().invoke(app, ["retention", "apply", "--monitor", "tiny"])
    assert run.exit_code == 0, run.output
    assert "dropped the vectors of 60 images" in run.output and _counts(monitored)["dark"] == (60, 0, 60)
    run = CliRunner().invoke(app, ["retention", "apply", "--older-than", "soon"])
    assert run.exit_code == 2 and "--older-than" in run.output


def test_the_retention_flow_applies_the_monitors_setting(monitored, tiny_monitor_dir, tmp_path, prefect_harness):
    from flows.retention import RetentionParams, retention_flow

    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config", retention={"vectors": "7d"})
    _age(monitored, ["clean"], 8)
    result = retention_flow(RetentionParams(monitor="tiny"))
    assert result["dropped"] == 60 and result["keep"] == 7 * 86400.0
    assert _counts(monitored)["clean"] == (60, 0, 60)
