"""Schedules that really fire: a real `t2c serve` process, this home's real local Prefect server
(its scheduler creates the runs), the real clock, and a quick-world monitor with a one-minute
inbox interval of 20 s and a per-minute audit cron. About two minutes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

T2C = Path(sys.executable).parent / "t2c"


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


def wait_for(what: str, check, server: subprocess.Popen, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        assert server.poll() is None, f"t2c serve exited ({server.returncode}) while waiting for {what}"
        time.sleep(3)
    raise AssertionError(f"no {what} within {timeout:.0f} s")


def test_serve_ingests_the_inbox_and_audits_on_schedule_then_stops_cleanly(scheduled_monitor, database_url,
                                                                            tmp_path):
    from t2c_monitor.world.generate import write_images

    root = scheduled_monitor
    write_images(tmp_path / "first", 60, seed=2)
    write_images(tmp_path / "second", 40, seed=3, shift="night=0.9")
    first = drop(tmp_path / "first", root / "inbox", "a")

    home = tmp_path / "serve-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # no harness: the local server
    env.update(T2C_HOME=str(home), T2C_DATABASE_URL=database_url, T2C_DEVICE="cpu")
    stderr_path = tmp_path / "serve.stderr"
    with open(stderr_path, "w") as stderr:
        server = subprocess.Popen([T2C, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                  start_new_session=True)
    engine = create_engine(database_url)

    def inbox_batches() -> list:
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT b.id, b.external_id, b.status, b.n_images, array_agg(i.uri) AS uris FROM batch b "
                "JOIN image i ON i.batch_id = b.id WHERE b.external_id LIKE 'inbox-%' "
                "GROUP BY b.id ORDER BY b.id")).all()

    def done_audit_of(batch_id: int):
        with engine.connect() as conn:
            return conn.execute(text("SELECT id FROM audit WHERE status = 'done' AND batch_ids @> "
                                     "CAST(:b AS jsonb)"), {"b": f"[{batch_id}]"}).first()

    try:
        started = time.monotonic()
        batches = wait_for("stored inbox batch", lambda: [b for b in inbox_batches() if b.status == "stored"],
                           server, timeout=180 - (time.monotonic() - started))
        assert set(batches[0].uris) == first and batches[0].n_images == 60
        wait_for("audit of the inbox batch", lambda: done_audit_of(batches[0].id), server,
                 timeout=max(30.0, 180 - (time.monotonic() - started)))

        second = drop(tmp_path / "second", root / "inbox", "b")
        later = wait_for("second inbox batch",
                         lambda: [b for b in inbox_batches() if b.status == "stored" and b.id != batches[0].id],
                         server, timeout=150)
        assert set(later[0].uris) == second, "the next interval takes only the new files"
        with engine.connect() as conn:
            uris = conn.execute(text("SELECT uri FROM image i JOIN batch b ON b.id = i.batch_id "
                                     "WHERE b.external_id LIKE 'inbox-%'")).scalars().all()
        assert len(uris) == len(set(uris)) == 100, "no file ingested twice"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        stop_asked = time.monotonic()
        try:
            code = server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            raise
        stopped_in = time.monotonic() - stop_asked
        engine.dispose()
    stderr_text = stderr_path.read_text()
    assert code == 0 and stopped_in < 15, (code, stopped_in)
    assert "Traceback" not in stderr_text, stderr_text[-3000:]
    assert "audit/audit-shapes" in stderr_text and "cron '* * * * *' (UTC)" in stderr_text
    assert "ingest-inbox/ingest-shapes" in stderr_text and "every 20s" in stderr_text
    assert "next 20" in stderr_text and "http://127.0.0.1:" in stderr_text, "next runs and the Prefect UI URL"
