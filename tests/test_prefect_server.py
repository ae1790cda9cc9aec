"""The local Prefect server of the embedded default, managed as users meet it: real `t2c` processes
on a fresh home, a real `prefect server start` with its services, real HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

T2C = Path(sys.executable).parent / "t2c"


def run_t2c(*args: str, home: Path, timeout: int = 240, **extra: str) -> subprocess.CompletedProcess:
    """``t2c`` without the Prefect settings of this test process (no API URL, no harness)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.run([T2C, *args], env={**env, "T2C_HOME": str(home), **extra}, capture_output=True, text=True,
                          timeout=timeout)


def prefect_servers(home: Path) -> list[int]:
    """Pids of `prefect server start` processes whose state is under ``home``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"prefect" in b" ".join(cmdline) and b"server" in cmdline and b"start" in cmdline \
                and f"PREFECT_HOME={home / 'prefect'}".encode() in environ:
            pids.append(int(proc.name))
    return pids


def test_two_processes_on_a_fresh_home_share_one_server_that_stop_stops(tmp_path):
    import httpx

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    starts = [subprocess.Popen([T2C, "server", "up", "--json"], env={**env, "T2C_HOME": str(home)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in starts]
    assert [p.returncode for p in starts] == [0, 0], [err for _, err in outputs]
    first, second = (json.loads(out) for out, _ in outputs)
    assert first["api_url"] == second["api_url"] and first["pid"] == second["pid"] and first["local"]
    assert prefect_servers(home) == [first["pid"]], "one server for the home"
    assert httpx.get(f"{first['api_url']}/health", timeout=5).json() is True
    assert httpx.get(first["ui_url"], timeout=5).status_code == 200, "the UI is served"
    ui_settings = httpx.get(f"{first['ui_url']}/ui-settings", timeout=5).json()
    assert ui_settings["api_url"] == first["api_url"], "the UI in the browser talks to this server's API"

    # a later command finds it through the record (no second start), and prints the UI URL
    url = run_t2c("server", "url", home=home)
    assert url.returncode == 0 and url.stdout.strip() == first["ui_url"]
    status = run_t2c("server", "status", "--json", home=home)
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True

    stopped = run_t2c("server", "stop", home=home)
    assert stopped.returncode == 0 and "stopped" in stopped.stderr
    assert prefect_servers(home) == [] and not (home / "prefect" / "server.json").exists()
    after = run_t2c("server", "status", home=home)
    assert after.returncode == 1 and "not running" in after.stderr


def test_a_stale_record_of_a_dead_server_is_replaced(tmp_path):
    home = tmp_path / "home"
    (home / "prefect").mkdir(parents=True)
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stale = {"api_url": f"http://127.0.0.1:{port}/api", "ui_url": f"http://127.0.0.1:{port}", "local": True,
             "pid": dead.pid, "port": port, "started_at": "2026-01-01T00:00:00+00:00", "prefect_version": "3"}
    (home / "prefect" / "server.json").write_text(json.dumps(stale))
    assert run_t2c("server", "status", home=home).returncode == 1

    up = run_t2c("server", "up", "--json", home=home)
    assert up.returncode == 0, up.stderr
    fresh = json.loads(up.stdout)
    assert fresh["pid"] != dead.pid and fresh["api_url"] != stale["api_url"]
    assert json.loads((home / "prefect" / "server.json").read_text())["pid"] == fresh["pid"]
    assert prefect_servers(home) == [fresh["pid"]]


def test_an_unreachable_prefect_api_url_fails_fast_naming_it_and_starts_nothing(tmp_path, tiny_monitor_dir):
    home = tmp_path / "home"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/api"
    for args in (("server", "up"), ("ingest", str(tiny_monitor_dir / "train"), "--monitor", "tiny")):
        result = run_t2c(*args, home=home, timeout=60, PREFECT_API_URL=url)
        assert result.returncode == 2, result.stderr
        assert url in result.stderr and "does not answer" in result.stderr and "Traceback" not in result.stderr
    assert prefect_servers(home) == [] and not (home / "prefect" / "server.json").exists()
