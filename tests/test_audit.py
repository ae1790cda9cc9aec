"""Baselines and audits on a real monitor and database: results stored per concept, windows
chosen as asked, stale baselines refused. (Which concept a planted shift flags is proven on the
shapes world, whose models learned what the concepts mean; the tiny monitor's models are random.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from t2c_monitor.audit import build_baseline, run_audit
from t2c_monitor.drift import KSDriftDetector
from t2c_monitor.errors import ConfigError


def test_no_baseline_is_a_message(applied_monitor):
    with pytest.raises(ConfigError, match="has no baseline yet: build one"):
        run_audit(applied_monitor, "tiny")


def test_baseline_from_named_batches_and_audits_of_windows(monitored):
    db = monitored
    baseline = build_baseline(db, "tiny", batches=["ref-1", "ref-2"], reservoir_size=100)
    assert (baseline.n_images, baseline.n_sampled, baseline.concepts) == (120, 100, 5)
    with db.engine.connect() as conn:
        stored = conn.execute(text("SELECT scores FROM baseline_concept ORDER BY concept_id")).scalars().all()
    assert all(list(s) == sorted(s) and len(s) == 100 for s in stored), "baseline samples are stored sorted"

    dark = run_audit(db, "tiny", batches=["dark"])
    assert dark.batches == ["dark"] and (dark.n_baseline, dark.n_current) == (100, 60)
    assert dark.flagged, "a window of all-dark pictures differs from the reference in some concept"
    assert [f.rank for f in dark.flagged] == list(range(1, len(dark.flagged) + 1))
    assert dark.direction_norm > 0
    with db.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.name, r.ks_stat, r.q_value, r.flagged, r.rank, r.direction FROM audit_result r "
            "JOIN concept c ON c.id = r.concept_id WHERE r.audit_id = :a ORDER BY c.position"), {"a": dark.id}).all()
        audit = conn.execute(text("SELECT n_flagged, n_current, status, vector_dims(direction) FROM audit "
                                  "WHERE id = :a"), {"a": dark.id}).one()
    assert [r.name for r in rows] == ["red", "green", "blue", "at night", "a bright picture"]
    assert {r.name for r in rows if r.flagged} == {f.name for f in dark.flagged}
    assert tuple(audit) == (len(dark.flagged), 60, "done", 32)
    for row in rows:
        assert 0 <= row.ks_stat <= 1 and 0 <= row.q_value <= 1 and row.direction in (-1, 1)

    # the shift explained: roots among the flagged concepts, the others echo them, and in words
    explanation = dark.explanation
    assert explanation is not None and dark.roots and set(dark.echoes) | {r.name for r in dark.roots} == \
        {f.name for f in dark.flagged}
    assert explanation.vector_test.p_value < 0.001 and explanation.vector_test.n_ref == 120
    assert dark.words is not None and (dark.words.grew or dark.words.shrank) and dark.words.text()
    with db.engine.connect() as conn:
        stored = conn.execute(text("SELECT explanation, residual IS NOT NULL FROM audit WHERE id = :a"),
                              {"a": dark.id}).one()
    assert [r["name"] for r in stored[0]["roots"]] == [r.name for r in dark.roots] and stored[1]
    assert stored[0]["words"]["grew"] == dark.words.grew and stored[0]["vector_test"]["dims"] >= 1
    assert dark.to_dict()["roots"] == [r.name for r in dark.roots]

    # the default window is the last stored batch; baseline batches never count as the window
    last = run_audit(db, "tiny")
    assert last.batches == ["dark"]
    clean = run_audit(db, "tiny", batches=["clean"], detector=KSDriftDetector(alpha=0.005))
    assert clean.n_current == 60


def test_the_monitors_window_reaches_back_over_small_batches_until_it_can_test(monitored, tiny_monitor_dir,
                                                                              tmp_path):
    """An inbox every few seconds makes batches of a handful of images: the scheduled audit (the monitor's
    `last`) reaches back until the window holds `min_images`; an explicit `last` gets what it asked for."""
    from conftest import apply_tiny

    from t2c_monitor.ingest import ingest
    from t2c_monitor.world.generate import write_images

    db = monitored
    build_baseline(db, "tiny", batches=["ref-1", "ref-2"], reservoir_size=100)
    for name, seed in (("small-1", 5), ("small-2", 6)):
        ingest(db, "tiny", write_images(tmp_path / name, 8, seed=seed).parent, batch_id=name)
    scheduled = run_audit(db, "tiny")
    assert scheduled.batches == ["dark", "small-1", "small-2"] and scheduled.n_current == 76
    with pytest.raises(ValueError, match="current has 8 samples per concept; an audit needs at least 20"):
        run_audit(db, "tiny", last=1)
    apply_tiny(db, tiny_monitor_dir, tmp_path / "wider", audit={"last": 2, "min_images": 80})
    assert run_audit(db, "tiny").batches == ["clean", "dark", "small-1", "small-2"]
    with pytest.raises(ConfigError, match="min_images"):
        apply_tiny(db, tiny_monitor_dir, tmp_path / "bad", audit={"min_images": 5})


def test_audit_matches_the_detector_on_the_same_scores(monitored):
    """The stored audit is the library's KS audit of exactly the window's and baseline's scores."""
    from t2c_monitor.store.baselines import active_baseline
    from t2c_monitor.store.monitors import get_monitor
    from t2c_monitor.store.scores import batch_scores

    db = monitored
    build_baseline(db, "tiny", batches=["ref-1", "ref-2"], reservoir_size=1000)  # keeps every score
    summary = run_audit(db, "tiny", batches=["dark"])
    with db.session() as s:
        record = get_monitor(s, "tiny")
    with db.engine.connect() as conn:
        base = active_baseline(conn, record.id, "tiny")
        ids = conn.execute(text("SELECT id FROM batch WHERE external_id IN ('ref-1', 'ref-2') ORDER BY id")).scalars()
        reference = np.concatenate([batch_scores(conn, b, record.bank_id) for b in ids])
        dark_id = conn.execute(text("SELECT id FROM batch WHERE external_id = 'dark'")).scalar()
        current = batch_scores(conn, dark_id, record.bank_id)
    np.testing.assert_array_equal(base.sorted_scores, np.sort(reference.T, axis=1))
    expected = KSDriftDetector().detect(reference, current, record.concept_names)
    assert [f.name for f in summary.flagged] == [c.name for c in expected.flagged]
    np.testing.assert_allclose([f.ks_stat for f in summary.flagged], [c.ks_stat for c in expected.flagged])


def test_stale_baseline_is_refused_and_history_is_kept(monitored, tiny_monitor_dir, tmp_path):
    from t2c_monitor.monitor_models import load_models
    from t2c_monitor.monitors import load_monitor_file
    from t2c_monitor.store.audits import concept_history
    from t2c_monitor.store.monitors import get_monitor, record_monitor

    db = monitored
    build_baseline(db, "tiny", batches=["ref-1"], reservoir_size=100)
    run_audit(db, "tiny", batches=["clean"])
    run_audit(db, "tiny", batches=["dark"])
    with db.session() as s:
        record = get_monitor(s, "tiny")
    with db.engine.connect() as conn:
        history = concept_history(conn, record.id, "AT NIGHT")
    assert len(history) == 2 and history[0].n_current == 60

    (config,) = load_monitor_file(tiny_monitor_dir / "monitors.yaml")
    bank = tmp_path / "bank.yaml"
    bank.write_text((tiny_monitor_dir / "bank.yaml").read_text() + "  - yellow\n")
    with db.session() as s:
        record_monitor(s, load_models(config.model_copy(update={"bank": bank}), device="cpu"))
    with pytest.raises(ConfigError, match=r"belongs to another concept bank \(now tiny v2\).*t2c baseline build"):
        run_audit(db, "tiny", batches=["dark"])
    rebuilt = build_baseline(db, "tiny", batches=["ref-1"], reservoir_size=100)
    assert rebuilt.concepts == 6  # the next baseline uses the new bank, and audits work again
    assert run_audit(db, "tiny", batches=["dark"]).n_current == 60


def test_empty_windows_and_bad_batches_are_messages(monitored):
    db = monitored
    with pytest.raises(ConfigError, match="Batches not stored for this monitor: nope"):
        build_baseline(db, "tiny", batches=["nope"])
    build_baseline(db, "tiny", batches=["ref-1"], reservoir_size=100)
    with pytest.raises(ConfigError, match="No stored batches of tiny in the audit window"):
        run_audit(db, "tiny", batches=["ref-1"])


def test_baseline_and_audit_from_the_command_line(monitored, database_url, tmp_path):
    import json
    import os
    import subprocess
    import sys

    t2c = Path(sys.executable).parent / "t2c"
    env = {**os.environ, "T2C_DATABASE_URL": database_url, "T2C_HOME": str(tmp_path / "home")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([t2c, *args], env=env, capture_output=True, text=True, timeout=300)

    built = run("baseline", "build", "--monitor", "tiny", "--batches", "ref-1,ref-2", "--reservoir", "100", "--json")
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["n_images"] == 120
    audited = run("audit", "--monitor", "tiny", "--batches", "dark", "--no-flow", "--json")
    assert audited.returncode == 0, audited.stderr
    summary = json.loads(audited.stdout)
    assert summary["batches"] == ["dark"] and summary["flagged"] and summary["alerts"] == []
    assert Path(summary["report"]).is_file() and summary["report"].startswith(str(tmp_path / "home"))
    # the rest in this process (each process start costs seconds): the same commands, the same database
    from typer.testing import CliRunner

    from t2c_monitor.cli import app

    def invoke(*args: str):
        return CliRunner().invoke(app, list(args))

    window = invoke("audit", "--monitor", "tiny", "--window", "2h", "--no-flow", "--no-alerts")
    assert window.exit_code == 0, window.output
    assert "clean, dark" in window.output and "report:" in window.output  # every batch of the last 2 h
    assert "root" in window.output and "in words: " in window.output, window.output  # roots first, then words
    history = invoke("audit", "history", "--monitor", "tiny", "--concept", "at night", "--json")
    assert history.exit_code == 0, history.output
    assert summary["id"] in [a["audit_id"] for a in json.loads(history.stdout)["audits"]]
    bad = invoke("audit", "--monitor", "tiny", "--window", "soon", "--no-flow")
    assert bad.exit_code == 2 and "is not a duration" in bad.output
    alerts = invoke("alerts", "list", "--monitor", "tiny", "--json")
    assert alerts.exit_code == 0 and json.loads(alerts.stdout)["alerts"] == []
    unknown = invoke("audit", "history", "--monitor", "tiny", "--concept", "snow")
    assert unknown.exit_code == 2 and "is not in bank tiny v1" in unknown.output


def test_baseline_build_keeps_the_monitors_reservoir_unless_told_otherwise(monitored, tiny_monitor_dir, tmp_path):
    """`audit.reservoir` of the monitor file is what `t2c baseline build` and the baseline flow keep;
    the monitor record a run reads is cached until the monitor is applied again."""
    from conftest import apply_tiny

    from t2c_monitor.store.monitors import get_monitor

    with monitored.session() as session:
        before = get_monitor(session, "tiny")
    with monitored.session() as session:
        assert get_monitor(session, "tiny") is before, "read once per change, not on every call"
    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config", audit={"reservoir": 50})
    with monitored.session() as session:
        after = get_monitor(session, "tiny")
    assert after is not before and after.config.audit.reservoir == 50
    assert build_baseline(monitored, "tiny", batches=["ref-1", "ref-2"]).n_sampled == 50
    assert build_baseline(monitored, "tiny", batches=["ref-1", "ref-2"], reservoir_size=80).n_sampled == 80


def test_report_of_a_shift_no_concept_names_shows_its_words_and_images(monitored, tmp_path):
    """The report leads with the unexplained shift in words and shows the window's images most along it."""
    import dataclasses

    from t2c_monitor.audit import audit_window, write_report

    db = monitored
    build_baseline(db, "tiny", batches=["ref-1", "ref-2"], reservoir_size=100)
    outcome = audit_window(db, "tiny", batches=["dark"])
    summary = outcome.summary
    hidden = dataclasses.replace(
        summary, words=dataclasses.replace(summary.words, unlisted=["snowfall"]),
        explanation=dataclasses.replace(summary.explanation, unlisted=True, residual_share=0.7))
    along = np.linspace(0.0, 1.0, outcome.current.shape[0])
    written = write_report(db, dataclasses.replace(outcome, summary=hidden, unexplained=along), tmp_path / "reports")
    html = Path(written.report).read_text()
    assert "a shift no concept names" in html.split("</h1>")[0] and "(in words: snowfall)" in html
    section = html.split("most along the shift no concept names")[1].split("<h2>")[0]
    assert section.count("data:image/png;base64,") == 6 and f"{along.max():.3f}" in section
