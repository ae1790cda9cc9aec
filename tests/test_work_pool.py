"""A worker that has only the wheel, the way a team with workers runs t2c-monitor.

The project's wheel is built and installed as a user installs it (not editable, outside the source tree; the
fresh environment borrows this environment's dependencies through a path file instead of downloading the
stack again), every packaged file is checked to be in it, and everything after that runs from a directory
with no checkout, through the wheel's own commands: ``t2c db upgrade`` migrates an empty database,
``t2c monitor apply`` records a monitor, ``t2c deployments prefect-yaml`` writes its deployments,
``prefect deploy --all`` sends them to the home's real Prefect server, and a ``prefect worker start`` on a
process pool runs the inbox ingest and then the audit: rows stored once, the audit completed and its HTML
report written from the wheel's templates."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import drop_database, make_database, write_images, write_png
from sqlalchemy import create_engine, text

BIN = Path(sys.executable).parent
POOL = "t2c-test-pool"


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


@pytest.fixture
def wheel_env(repo_root, tmp_path) -> Path:
    """A virtual environment with the project's wheel installed, and nothing of the checkout."""
    built = _run(BIN / "uv", "build", "--wheel", "--out-dir", tmp_path / "dist", repo_root, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("t2c_monitor-*.whl")

    packaged = _run("git", "ls-files", "t2c_monitor", "flows", "migrations", cwd=repo_root).stdout.split()
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    missing = [p for p in packaged if p.startswith(("t2c_monitor/", "flows/")) and p not in in_wheel]
    assert not missing, f"files of the packages that the wheel lacks: {missing}"

    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = _run(BIN / "uv", "pip", "install", "--python", python, "--no-deps", wheel, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


@pytest.fixture
def empty_database(pg_server_url):
    """A database with nothing in it (the wheel's migrations build the schema), dropped afterwards."""
    url = make_database(pg_server_url)
    engine = create_engine(url)
    yield url, engine
    engine.dispose()
    drop_database(pg_server_url, url)


def test_a_worker_with_only_the_wheel_runs_the_deployed_ingest_and_audit(wheel_env, tiny_monitor_dir, empty_database,
                                                                         tmp_path):
    python, t2c = wheel_env / "bin" / "python", wheel_env / "bin" / "t2c"
    workdir = tmp_path / "worker"  # no checkout here: everything below comes from the wheel
    workdir.mkdir()
    inbox, config = tmp_path / "inbox", tmp_path / "config"
    write_images(inbox, 40, seed=31)
    document = yaml.safe_load((tiny_monitor_dir / "monitors.yaml").read_text())
    monitor = document["monitors"][0]
    models = tiny_monitor_dir
    monitor["encoder"] = monitor["encoder"].replace("@encoder.safetensors", f"@{models / 'encoder.safetensors'}")
    monitor["clip"] = monitor["clip"].replace("@clip.pt", f"@{models / 'clip.pt'}")
    monitor.update(aligner=str(tiny_monitor_dir / "aligner"), bank=str(tiny_monitor_dir / "bank.yaml"),
                   schedules={"inbox": str(inbox), "ingest_interval": "1h", "audit_cron": "0 0 1 1 *"})
    config.mkdir()
    (config / "monitors.yaml").write_text(yaml.safe_dump(document))

    database_url, engine = empty_database
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "T2C_", "PYTHONPATH"))}
    env.update(T2C_HOME=str(tmp_path / "home"), T2C_DATABASE_URL=database_url, T2C_DEVICE="cpu",
               T2C_MODELS=os.environ["T2C_MODELS"], PREFECT_WORKER_QUERY_SECONDS="2",
               PREFECT_WORKER_PREFETCH_SECONDS="5")

    def run(*args, timeout: float = 300) -> subprocess.CompletedProcess:
        done = _run(*args, env=env, cwd=workdir, timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    where = run(python, "-c", "import t2c_monitor, flows; print(t2c_monitor.__file__); print(flows.__file__)")
    assert all(line.startswith(str(wheel_env)) for line in where.stdout.split()), where.stdout  # not the checkout

    worker = None
    try:
        run(t2c, "db", "upgrade")
        assert json.loads(run(t2c, "db", "status", "--json").stdout)["at_head"] is True
        run(t2c, "monitor", "apply", config / "monitors.yaml")
        server = json.loads(run(t2c, "server", "up", "--json").stdout)
        env["PREFECT_API_URL"] = api = server["api_url"]

        deployer = tmp_path / "deployer"  # another machine's folder: gone before the worker starts
        deployer.mkdir()
        run(t2c, "deployments", "prefect-yaml", config / "monitors.yaml", "--out", deployer / "prefect.yaml",
            "--work-pool", POOL)
        run(python, "-m", "prefect", "work-pool", "create", POOL, "--type", "process")
        deployed = _run(python, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", "prefect.yaml",
                        env=env, cwd=deployer, timeout=300)
        assert deployed.returncode == 0 and "ingest-tiny" in deployed.stdout and "audit-tiny" in deployed.stdout, \
            deployed.stdout[-2000:] + deployed.stderr[-2000:]
        shutil.rmtree(deployer)
        worker_log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen([python, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"],
                                  env=env, cwd=workdir, stdout=worker_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)

        def run_deployment(name: str) -> None:
            started = json.loads(run(python, "-c", _RUN_DEPLOYMENT, name).stdout)
            state, deadline = None, time.monotonic() + 420
            while time.monotonic() < deadline and worker.poll() is None:
                state = httpx.get(f"{api}/flow_runs/{started}", timeout=10).json()["state"]["type"]
                if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
                time.sleep(2)
            log = (tmp_path / "worker.log").read_text()
            assert state == "COMPLETED", f"{name}: run state {state}; worker log:\n{log[-4000:]}"

        run_deployment("ingest-inbox/ingest-tiny")
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT b.external_id, b.status, b.n_ok, count(i.id) FROM batch b "
                                       "JOIN image i ON i.batch_id = b.id GROUP BY b.id")).all()
        assert [tuple(r)[1:] for r in stored] == [("stored", 40, 40)], "the worker's run stored the inbox, once"

        rng = __import__("numpy").random.default_rng(4)
        for i in range(40):  # a night shift for the audit to find
            write_png(tmp_path / "dark" / f"img-{i:03d}.png", tuple(int(c) for c in rng.integers(0, 25, 3)),
                      seed=900 + i)
        run(t2c, "baseline", "build", "--monitor", "tiny", "--batches", stored[0][0])
        run(t2c, "ingest", tmp_path / "dark", "--monitor", "tiny", "--batch-id", "dark")
        run_deployment("audit/audit-tiny")
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        _run(t2c, "server", "stop", env=env, timeout=120)

    with engine.connect() as conn:
        audits = conn.execute(text("SELECT a.id, a.status, a.n_flagged, a.error, array_agg(b.external_id) AS batches "
                                   "FROM audit a JOIN batch b ON a.batch_ids @> to_jsonb(b.id) GROUP BY a.id")).all()
    assert [(a.status, a.batches) for a in audits] == [("done", ["dark"])], audits
    assert audits[0].n_flagged > 0, "the night shift is flagged"
    report = tmp_path / "home" / "reports" / "tiny" / f"audit-{audits[0].id}" / "index.html"
    assert report.is_file(), f"no report at {report}"
    html = report.read_text()
    assert "tiny" in html and "data:image/png;base64," in html, "the wheel's templates rendered charts"


# Start a deployment's run and print its id (the CLI prints it only in prose).
_RUN_DEPLOYMENT = """
import json, sys
from prefect.deployments import run_deployment
print(json.dumps(str(run_deployment(sys.argv[1], timeout=0).id)))
"""
