"""Schedules that really fire: a real `t2c serve` process, this home's real local Prefect server
(its scheduler creates the runs), the real clock, and a quick-world monitor with a one-minute
inbox interval of 20 s and a per-minute audit cron. About two and a half minutes."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


@pytest.fixture
def scheduled_monitor(quick_world, quick_aligner, tmp_path_factory, database_url, monkeypatch):
    """A quick-world monitor (per-minute schedules, inbox under its home) with a baseline built."""
    from t2c_monitor.apply import apply_monitor_file
    from t2c_monitor.audit import build_baseline
    from t2c_monitor.demo import DEMO_MONITOR, demo_monitor_document
    from t2c_monitor.ingest import ingest
    from t2c_monitor.settings import reset_settings_cache
    from t2c_monitor.store import open_database
    from t2c_monitor.world.evaluate import default_bank_path
    from t2c_monitor.world.generate import write_images

    root = tmp_path_factory.mktemp("scheduled")
    monkeypatch.setenv("T2C_DATABASE_URL", database_url)
    reset_settings_cache()
    document = demo_monitor_document(encoder=quick_world.source_spec, clip=quick_world.clip_spec,
                                     aligner=str(quick_aligner),
                                     bank=str(default_bank_path()))
    monitor = document["monitors"][0]
    monitor["alerts"]["channels"] = ["log"]
    monitor["schedules"].update(audit_cron="* * * * *", inbox=str(root / "inbox"), ingest_interval="20s")
    (root / "inbox").mkdir()
    path = root / "monitors.yaml"
    path.write_text(yaml.safe_dump(document))
    db = open_database()
    apply_monitor_file(path, db, device="cpu")
    write_images(root / "reference", 300, seed=1)
    ingest(db, DEMO_MONITOR, root / "reference", batch_id="reference")
    build_baseline(db, DEMO_MONITOR, batches=["reference"])
    db.engine.dispose()
    return root


def drop(staging: Path, inbox: Path, prefix: str) -> set[str]:
    """Move a staged set of images into the inbox (renamed so names never collide); their URIs."""
    moved = set()
    for f in sorted(staging.glob("*.png")):
        target = inbox / f"{prefix}-{f.name}"
        shutil.copy(f, target.with_suffix(".part"))
        target.with_suffix(".part").rename(target)  # appears whole, as a careful uploader writes
        moved.add(str(target))
    return moved


def test_serve_ingests_a_stream_of_files_once_and_audits_on_schedule_then_stops_cleanly(scheduled_monitor,
                                                                                       database_url, tmp_path):
    """The short soak (bench/faults.py runs the long one): files waiting before serve starts, then a file every
    3 s while it serves; every file stored once, audits on the minute, bounded handles, a clean stop."""
    from faults import soak

    from t2c_monitor.world.generate import write_images

    root = scheduled_monitor
    write_images(tmp_path / "first", 60, seed=2)
    first = drop(tmp_path / "first", root / "inbox", "a")  # waiting in the inbox before serve starts
    stream = sorted(write_images(tmp_path / "stream", 40, seed=3, shift="night=0.9").parent.glob("*.png"))

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # no harness: the local server
    env.update(T2C_HOME=str(tmp_path / "serve-home"), T2C_DATABASE_URL=database_url, T2C_DEVICE="cpu")
    stderr_path = tmp_path / "serve.stderr"
    engine = create_engine(database_url)
    try:
        report = soak(env, engine, stream, root / "inbox", minutes=0.75, every=3, settle=20, stderr=stderr_path,
                      until_audited=True, log=lambda _: None)
        with engine.connect() as conn:
            batches = conn.execute(text(
                "SELECT b.id, b.status, b.n_images, array_agg(i.uri) AS uris FROM batch b JOIN image i "
                "ON i.batch_id = b.id WHERE b.external_id LIKE 'inbox-%' GROUP BY b.id ORDER BY b.id")).all()
            audited = conn.execute(text("SELECT batch_ids FROM audit WHERE status = 'done'")).scalars().all()
            errors = conn.execute(text("SELECT error FROM audit WHERE status = 'failed'")).scalars().all()
    finally:
        engine.dispose()
    stderr_text = stderr_path.read_text()
    assert report.exit_code == 0 and report.stop_seconds < 15, (report, stderr_text[-3000:])
    # a run in flight when serve stops gets SIGTERM; its interpreter's teardown may print Python's "Exception
    # ignored in ..." with a traceback: that is the cancelled child, not serve, so only other tracebacks count
    assert stderr_text.count("Traceback") == stderr_text.count("Exception ignored in"), stderr_text[-3000:]
    assert first <= set(batches[0].uris), "the files waiting when serve starts go in its first batch"
    assert report.files >= 10 and (report.missed, report.duplicates, report.runs_failed) == (0, 0, 0), report
    assert len(batches) >= 2 and all(b.status == "stored" for b in batches), "later intervals take the new files"
    inbox_ids = {b.id for b in batches}
    assert report.audits >= 1 and any(inbox_ids & set(ids) for ids in audited), \
        f"a scheduled audit saw the inbox; failed audits: {errors}; serve: {stderr_text[-3000:]}"
    # that every audit the scheduler creates runs to an end is the long form's figure (bench/faults.py: on two
    # busy cores an audit started in the last minute of this short run may still be running when serve stops)
    assert report.fds_first_last[1] < 100 and report.connections_max <= 10, report
    assert "audit/audit-shapes" in stderr_text and "cron '* * * * *' (UTC)" in stderr_text
    assert "ingest-inbox/ingest-shapes" in stderr_text and "every 20s" in stderr_text
    assert "next 20" in stderr_text and "http://127.0.0.1:" in stderr_text, "next runs and the Prefect UI URL"
