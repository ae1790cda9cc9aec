"""The short form of ``bench/faults.py``'s process scenarios (the benchmark runs the long form): real
`t2c ingest` processes killed with SIGKILL and run again, and the database stopped under an ingest and an
audit. Apart from test_faults.py (and `t2c serve` killed, in test_faults_serve.py) so that `make test`'s
two workers share the slow scenarios."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import write_images
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from faults import kill_ingest  # noqa: E402


def test_killed_ingests_rerun_to_a_clean_runs_rows_and_leave_no_process(applied_monitor, database_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # the home's local server
    env.update(T2C_HOME=str(tmp_path / "home"), T2C_DATABASE_URL=database_url, T2C_DEVICE="cpu")
    source = write_images(tmp_path / "batch", 40, seed=21)[0].parent
    engine = create_engine(database_url)
    try:
        report = kill_ingest(env, engine, "tiny", source, trials=2, seed=3, log=lambda _: None)
    finally:
        engine.dispose()
    assert report.trials == 2 and report.completed == 2, report
    assert (report.duplicates, report.lost, report.orphans) == (0, 0, 0), report
    assert report.listed_unfinished == report.killed_unfinished, "a killed batch is listed with what a rerun does"


def test_the_database_going_away_fails_the_run_cleanly_and_the_next_run_completes(tiny_monitor_dir, tmp_path,
                                                                                   monkeypatch):
    from faults import batch_rows, database_outage, run_t2c

    from t2c_monitor.apply import apply_monitor_file
    from t2c_monitor.ingest import ingest
    from t2c_monitor.settings import reset_settings_cache
    from t2c_monitor.store import open_database
    from t2c_monitor.store.embedded import start_embedded
    from t2c_monitor.store.engine import normalise_url

    pgdata = tmp_path / "pg"  # a server of its own, to stop (the suite's is shared)
    url = normalise_url(start_embedded(pgdata))
    monkeypatch.setenv("T2C_DATABASE_URL", url)
    reset_settings_cache()
    db = open_database()
    apply_monitor_file(tiny_monitor_dir / "monitors.yaml", db, device="cpu")
    source = write_images(tmp_path / "batch", 48, seed=4)[0].parent
    ingest(db, "tiny", source, batch_id="clean")
    engine = create_engine(url)
    reference = batch_rows(engine, "tiny", "clean")
    engine.dispose()
    db.engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(T2C_HOME=str(tmp_path / "home"), T2C_DATABASE_URL=url, T2C_DEVICE="cpu")
    assert run_t2c(env, "server", "up").returncode == 0
    report = database_outage(env, pgdata, url, "tiny", source, batch="outage", chunk=16, reference=reference,
                             stop_after=2.0)
    assert report.failed_cleanly, report
    assert "database" in report.message.lower() or "postgresql" in report.message.lower(), report
    assert report.seconds_to_fail < 120 and report.partial_chunks_ok and report.recovered, report

    from faults import audit_outage  # and under an audit: nothing half-written, the next audit completes

    from t2c_monitor.audit import build_baseline

    db = open_database()
    build_baseline(db, "tiny", batches=["clean"], reservoir_size=40)
    db.engine.dispose()
    audited = audit_outage(env, pgdata, url, "tiny", "outage")  # the outage at 60% of a clean audit's time
    assert audited.failed_cleanly and audited.half_written == 0 and audited.recovered, audited
    assert "database" in audited.message.lower() or "postgresql" in audited.message.lower(), audited
