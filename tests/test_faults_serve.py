"""The short form of ``bench/faults.py``'s ``kill_serve``: `t2c serve` killed (its whole process group, as a
container dies) half-way through an inbox run, then served again."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import apply_tiny, write_images
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from faults import kill_serve  # noqa: E402


def test_serve_killed_mid_inbox_run_then_served_again_stores_every_file_once(applied_monitor, tiny_monitor_dir,
                                                                              database_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # the home's local server
    env.update(T2C_HOME=str(tmp_path / "home"), T2C_DATABASE_URL=database_url, T2C_DEVICE="cpu")
    apply_tiny(applied_monitor, tiny_monitor_dir, tmp_path / "scheduled",
               schedules={"inbox": str(tmp_path / "inbox"), "ingest_interval": "20s"})
    images = sorted(write_images(tmp_path / "stream", 160, seed=22)[0].parent.glob("*.png"))
    engine = create_engine(database_url)
    try:
        killed = kill_serve(env, engine, images, tmp_path / "inbox", log=lambda _: None)
    finally:
        engine.dispose()
    assert killed.killed_in_flight and killed.stored_when_killed > 0 and killed.orphans == 0, killed
    assert (killed.missed, killed.duplicates) == (0, 0) and killed.interrupted_closed, killed
    assert killed.exit_code == 0, killed
