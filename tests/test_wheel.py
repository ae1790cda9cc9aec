"""A wheel of the project, installed as a user installs it (not editable, outside the source tree),
migrates a database and runs the quick demo. The fresh environment borrows this environment's
installed dependencies through a path file instead of downloading the stack a second time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

BIN = Path(sys.executable).parent


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


def test_an_installed_wheel_migrates_and_runs_the_quick_demo(repo_root, tmp_path, database_url, quick_world,
                                                             prefect_harness):
    from prefect.settings import PREFECT_API_URL

    built = run(BIN / "uv", "build", "--wheel", "--out-dir", tmp_path / "dist", repo_root, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("t2c_monitor-*.whl")

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run(BIN / "uv", "pip", "install", "--python", python, "--no-deps", wheel, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "T2C_", "PYTHONPATH"))}
    env.update(T2C_HOME=str(tmp_path / "home"), T2C_DATABASE_URL=database_url, T2C_DEVICE="cpu",
               T2C_MODELS=str(quick_world.root.parent), PREFECT_API_URL=PREFECT_API_URL.value())
    where = run(python, "-c", "import t2c_monitor, flows; print(t2c_monitor.__file__); print(flows.__file__)",
                env=env, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout  # not the source tree

    t2c = venv / "bin" / "t2c"
    upgraded = run(t2c, "db", "upgrade", env=env, cwd=tmp_path, timeout=300)
    assert upgraded.returncode == 0, upgraded.stderr
    status = run(t2c, "db", "status", "--json", env=env, cwd=tmp_path, timeout=120)
    assert status.returncode == 0 and json.loads(status.stdout)["at_head"] is True, status.stderr

    demo = run(t2c, "demo", "--quick", "--json", env=env, cwd=tmp_path, timeout=900)
    assert demo.returncode == 0, demo.stderr[-3000:]
    result = json.loads(demo.stdout.strip().splitlines()[-1])
    flagged = {d["batch"]: d["flagged"] for d in result["days"]}
    assert flagged["day-4"][0] == "more 'grass'" and flagged["day-1"] == []
    assert result["prefect_ui"] == PREFECT_API_URL.value().removesuffix("/api")
