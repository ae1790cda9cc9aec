"""`t2c monitor apply/list` and `t2c ingest` as a user runs them: real processes, real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import write_images

T2C = Path(sys.executable).parent / "t2c"


def run_t2c(*args: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``t2c`` as a user's shell runs it: without the Prefect settings this test process has picked
    up (importing ``flows`` sets PREFECT_HOME; a test harness points at its own API)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.run([T2C, *args], env={**clean, **env}, capture_output=True, text=True, timeout=timeout)


def test_apply_list_and_ingest_from_the_command_line(database_url, tiny_monitor_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from t2c_monitor.cli import app
    from t2c_monitor.settings import reset_settings_cache

    env = {"T2C_DATABASE_URL": database_url, "T2C_HOME": str(tmp_path / "home"), "T2C_DEVICE": "cpu"}
    for key, value in env.items():  # the same settings for the commands run in this process
        monkeypatch.setenv(key, value)
    reset_settings_cache()

    def invoke(*args: str):
        run = CliRunner().invoke(app, list(args))
        assert run.exit_code == 0, run.output
        return json.loads(run.stdout.strip().splitlines()[-1])

    assert invoke("monitor", "apply", str(tiny_monitor_dir / "monitors.yaml"), "--check", "--json")["checked_only"]
    assert invoke("monitor", "list", "--json")["monitors"] == []
    applied = run_t2c("monitor", "apply", str(tiny_monitor_dir / "monitors.yaml"), "--json", env=env)  # a process
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["monitors"][0] == {
        "name": "tiny", "bank": "tiny", "bank_version": 1, "concepts": 5, "dim": 32,
    }
    assert [m["name"] for m in invoke("monitor", "list", "--json")["monitors"]] == ["tiny"]

    write_images(tmp_path / "inbox", 9, seed=4)
    (tmp_path / "inbox" / "zero.png").write_bytes(b"")
    result = run_t2c("ingest", str(tmp_path / "inbox"), "--monitor", "tiny", "--json", env={  # the Prefect flow
        **env, "T2C_LOG_LEVEL": "WARNING"})
    assert result.returncode == 0, result.stderr
    assert "| INFO" not in result.stderr, "T2C_LOG_LEVEL applies to the flow runs' logs"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["status"], summary["n_ok"], summary["n_failed"]) == ("stored", 9, 1)
    assert summary["failures"] == {"empty file": 1}
    assert (tmp_path / "home" / "prefect").is_dir(), "Prefect's local state belongs under T2C_HOME"

    rerun = invoke("ingest", str(tmp_path / "inbox"), "--monitor", "tiny", "--no-flow", "--json")
    assert rerun["n_images"] == 10 and rerun["id"] == summary["id"]


def test_bad_monitor_file_and_unknown_monitor_are_messages(database_url, tmp_path):
    env = {"T2C_DATABASE_URL": database_url, "T2C_HOME": str(tmp_path / "home")}
    bad = tmp_path / "monitors.yaml"
    bad.write_text("monitors:\n  - name: m\n    encoder: timm:x\n    clip: c\n    aligner: a\n    bank: b\n"
                   "    schedule: daily\n")
    result = run_t2c("monitor", "apply", str(bad), env=env)
    assert result.returncode == 2 and "monitors[0].schedule: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "in").mkdir()
    write_images(tmp_path / "in", 1)
    missing = run_t2c("ingest", str(tmp_path / "in"), "--monitor", "ghost", "--no-flow", env=env)
    assert missing.returncode == 2 and "No monitor named 'ghost'" in missing.stderr


def test_no_flow_refuses_the_sharding_options_it_cannot_honour(tmp_path):
    from typer.testing import CliRunner

    from t2c_monitor.cli import app

    for option in (["--workers", "2"], ["--dask-address", "tcp://127.0.0.1:8786"]):
        result = CliRunner().invoke(app, ["ingest", str(tmp_path), "--monitor", "m", "--no-flow", *option])
        assert result.exit_code == 2 and "drop --no-flow" in result.output, result.output
