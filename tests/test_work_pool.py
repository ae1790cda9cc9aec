"""The generated prefect.yaml proven the way a team with workers runs it: `t2c deployments prefect-yaml`,
`prefect deploy --all` against the home's real Prefect server, a `prefect worker start` on a process
pool, a deployment run that the worker picks up, completes and whose rows land in the database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import apply_tiny, write_images
from sqlalchemy import text

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def test_a_process_worker_runs_a_deployed_monitor_flow_and_stores_its_rows(applied_monitor, tiny_monitor_dir,
                                                                           database_url, tmp_path):
    inbox = tmp_path / "inbox"
    monitors = apply_tiny(applied_monitor, tiny_monitor_dir, tmp_path / "config",
                          schedules={"inbox": str(inbox), "ingest_interval": "1h"})
    write_images(inbox, 12, seed=31)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(T2C_HOME=str(tmp_path / "home"), T2C_DATABASE_URL=database_url, T2C_DEVICE="cpu",
               T2C_PROJECT_DIR=str(ROOT), PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5")

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    server = json.loads(run(str(BIN / "t2c"), "server", "up", "--json").stdout)
    env["PREFECT_API_URL"] = server["api_url"]
    worker = None
    try:
        document = tmp_path / "prefect.yaml"
        run(str(BIN / "t2c"), "deployments", "prefect-yaml", str(monitors), "--out", str(document),
            "--work-pool", "t2c-test-pool")
        run(str(BIN / "prefect"), "work-pool", "create", "t2c-test-pool", "--type", "process")
        deployed = run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", str(document))
        assert "ingest-tiny" in deployed.stdout, deployed.stdout[-2000:]
        worker_log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "t2c-test-pool", "--type",
                                   "process"], env=env, cwd=tmp_path, stdout=worker_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        started = run(str(BIN / "prefect"), "deployment", "run", "ingest-inbox/ingest-tiny")
        assert "Created flow run" in started.stdout, started.stdout

        api, state, deadline = server["api_url"], None, time.monotonic() + 420
        while time.monotonic() < deadline and worker.poll() is None:
            runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["tiny"]}}},
                              timeout=10).json()
            states = [r["state"]["type"] for r in runs if r.get("deployment_id")]
            if "COMPLETED" in states or any(s in ("FAILED", "CRASHED") for s in states):
                state = "COMPLETED" if "COMPLETED" in states else states
                break
            time.sleep(2)
        log = (tmp_path / "worker.log").read_text()
        assert state == "COMPLETED", f"run states {state}; worker log:\n{log[-4000:]}"
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        subprocess.run([str(BIN / "t2c"), "server", "stop"], env=env, capture_output=True, timeout=120)

    with applied_monitor.engine.connect() as conn:
        stored = conn.execute(text("SELECT b.status, b.n_ok, count(i.id) FROM batch b "
                                   "JOIN image i ON i.batch_id = b.id GROUP BY b.id")).all()
    assert [tuple(r) for r in stored] == [("stored", 12, 12)], "the worker's run stored the inbox, once"
