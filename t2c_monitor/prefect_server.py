"""The local Prefect server of the embedded default: one per ``T2C_HOME``, shared by every process.

Prefect's temporary server (what a client starts for itself when ``PREFECT_API_URL`` is unset)
registers deployments and schedules but runs none of the server services, so no schedule ever
fires on it, and it vanishes with the command that started it. So, like the embedded PostgreSQL,
the embedded default runs a real ``prefect server start`` with its services (scheduler, late
runs, cancellation) as a detached process:

- its state lives in ``$T2C_HOME/prefect`` (Prefect's SQLite database, its log ``server.log``);
- it listens on a free port of 127.0.0.1, recorded in ``$T2C_HOME/prefect/server.json`` so that
  every later ``t2c`` process finds it; a file lock makes two processes that start at once share
  one server; a record whose process is dead or does not answer is replaced;
- it outlives the command that started it (its UI shows the runs of every command), until
  ``t2c server stop``.

When ``PREFECT_API_URL`` is set (or a Prefect profile or test harness names an API), that server
is used and none is started; one that does not answer fails fast, naming the URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from t2c_monitor.errors import PrefectUnavailableError
from t2c_monitor.settings import Settings, get_settings

RECORD = "server.json"
LOG = "server.log"
HOST = "127.0.0.1"
# Server-side settings of the local server. The scheduler looks for due schedules every 10 s
# instead of Prefect's 60 s, so a freshly served per-minute schedule gets its first run on time;
# the recent-deployments loop (5 s) covers deployments just registered.
SERVER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "true",
    "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_ENABLED": "true",
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "10",
    "PREFECT_SERVER_UI_ENABLED": "true",
}


@dataclass(frozen=True)
class PrefectEndpoint:
    """Where flows report: the API (``.../api``), its UI, and whether it is this home's local server."""

    api_url: str
    ui_url: str
    local: bool
    pid: int | None = None
    port: int | None = None
    started_at: str | None = None
    prefect_version: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def server_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).prefect_dir


def configured_api_url() -> str | None:
    """The API URL Prefect's own settings name (``PREFECT_API_URL``, a profile, a test harness), if any."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url).rstrip("/") if url else None


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers its health check at ``api_url``."""
    import httpx

    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def ui_url_for(api_url: str) -> str:
    return api_url.rstrip("/").removesuffix("/api")


# ------------------------------------------------------------------------------------------------
# the record of the local server


def read_record(settings: Settings | None = None) -> PrefectEndpoint | None:
    path = server_dir(settings) / RECORD
    try:
        return PrefectEndpoint(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write_record(settings: Settings, endpoint: PrefectEndpoint) -> None:
    path = server_dir(settings) / RECORD
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(endpoint.to_dict(), indent=2))
    scratch.replace(path)  # readers see the old record or the new one, never half of one


def _forget_record(settings: Settings) -> None:
    (server_dir(settings) / RECORD).unlink(missing_ok=True)


def _alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live (not zombie) process running Prefect: a reused pid is not ours."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and b"prefect" in cmdline


def _reap(pid: int) -> None:
    """Collect the exit status of a server this process started (else it lingers as a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def running_server(settings: Settings | None = None) -> PrefectEndpoint | None:
    """The recorded local server if its process is alive and its API answers, else None."""
    record = read_record(settings)
    if record is None or not _alive(record.pid) or not healthy(record.api_url):
        return None
    return record


# ------------------------------------------------------------------------------------------------
# starting and stopping


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _log_tail(settings: Settings, n: int = 2000) -> str:
    path = server_dir(settings) / LOG
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no server log)"


def _spawn(settings: Settings) -> PrefectEndpoint:
    """Start ``prefect server start`` detached from this process and wait until its API answers."""
    import prefect

    directory = server_dir(settings)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_URL", "PREFECT_PROFILE")}
    # WARNING unless debugging: at INFO every poll of every runner is a line of its log, forever
    env.update(SERVER_ENV, PREFECT_HOME=str(directory),
               PREFECT_SERVER_LOGGING_LEVEL="DEBUG" if settings.log_level == "DEBUG" else "WARNING",
               # the UI is a page in the user's browser: it must be told where this server's API is
               # (otherwise it looks for Prefect's default port 4200 and shows no runs)
               PREFECT_UI_API_URL=f"http://{HOST}:{port}/api", PREFECT_SERVER_API_HOST=HOST,
               PREFECT_SERVER_API_PORT=str(port))
    with open(directory / LOG, "ab") as log:
        log.write(f"\n--- {datetime.now(UTC).isoformat()} starting on port {port}\n".encode())
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=directory,
            start_new_session=True,  # its own process group: a Ctrl-C of this command does not stop it
        )
    api_url = f"http://{HOST}:{port}/api"
    deadline = time.monotonic() + settings.prefect_startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PrefectUnavailableError(
                f"The local Prefect server exited with status {process.returncode} while starting "
                f"(log {directory / LOG}):\n{_log_tail(settings)}"
            )
        if healthy(api_url, timeout=1.0):
            return PrefectEndpoint(api_url=api_url, ui_url=ui_url_for(api_url), local=True, pid=process.pid,
                                   port=port, started_at=datetime.now(UTC).isoformat(timespec="seconds"),
                                   prefect_version=prefect.__version__)
        time.sleep(0.5)
    _terminate(process.pid)
    raise PrefectUnavailableError(
        f"The local Prefect server did not answer within {settings.prefect_startup_timeout_s} s "
        f"(T2C_PREFECT_STARTUP_TIMEOUT_S); log {directory / LOG}:\n{_log_tail(settings)}"
    )


def start_server(settings: Settings | None = None) -> PrefectEndpoint:
    """The running local server of this home, started if there is none (or only a stale record)."""
    from filelock import FileLock, Timeout

    settings = settings or get_settings()
    directory = server_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    found = running_server(settings)  # the common case, without waiting for the lock
    if found:
        return found
    try:
        with FileLock(str(directory / "server.lock"), timeout=settings.prefect_startup_timeout_s + 30):
            found = running_server(settings)  # another process may have started it while we waited
            if found:
                return found
            stale = read_record(settings)
            if stale is not None and _alive(stale.pid):  # alive but not answering: replace it
                _terminate(stale.pid)
            _forget_record(settings)
            endpoint = _spawn(settings)
            _write_record(settings, endpoint)
            return endpoint
    except Timeout as exc:
        raise PrefectUnavailableError(
            f"Another process holds {directory / 'server.lock'} and has not finished starting the local Prefect "
            "server; check `t2c server status` and its log, or remove the lock if no t2c process is running."
        ) from exc


def _terminate(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return _reap(pid)
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not _alive(pid):
                return None
            time.sleep(0.2)
    return None


def stop_server(settings: Settings | None = None) -> bool:
    """Stop this home's local server; returns whether one was running."""
    settings = settings or get_settings()
    record = read_record(settings)
    running = record is not None and _alive(record.pid)
    if running:
        _terminate(record.pid)
    _forget_record(settings)
    return running


# ------------------------------------------------------------------------------------------------
# the entry point of every command that runs flows


def use_prefect_server(settings: Settings | None = None) -> PrefectEndpoint:
    """Point this process's flows at a Prefect server whose services run, and return it.

    A configured API (``PREFECT_API_URL``, a profile, a test harness) is used as it is, after a
    quick health check that fails with the URL and what to check; otherwise this home's local
    server is started or joined, and this process (and the flow-run processes it starts) talks to it.
    """
    settings = settings or get_settings()
    configured = configured_api_url()
    if configured:
        if not healthy(configured, timeout=float(settings.connect_timeout_s)):
            raise PrefectUnavailableError(
                f"The Prefect API at {configured} (PREFECT_API_URL) does not answer its health check within "
                f"{settings.connect_timeout_s} s. Check that the server is running and reachable from here "
                f"(`curl {configured}/health`), or unset PREFECT_API_URL to use the local server of T2C_HOME."
            )
        return PrefectEndpoint(api_url=configured, ui_url=ui_url_for(configured), local=False)
    endpoint = start_server(settings)
    os.environ["PREFECT_API_URL"] = endpoint.api_url
    os.environ["PREFECT_UI_URL"] = endpoint.ui_url
    import prefect.context

    prefect.context.refresh_global_settings_context()  # prefect read the environment when it was imported
    return endpoint
