"""The embedded PostgreSQL (with pgvector) that runs when no external database is configured.

It lives in ``<home>/pgdata``, keeps running after the command that started it (so the URL that
``t2c demo`` prints works in psql or Grafana afterwards) and is reused by every later run;
``t2c db stop`` stops it. pgserver serialises start-up with an inter-process lock, so a second
``t2c`` process joins the running server instead of starting another on the same files.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from pathlib import Path

from t2c_monitor.errors import DatabaseUnavailableError


def _pgserver():
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # pgserver keeps its lock in the runtime dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    logging.getLogger("pgserver").setLevel(logging.CRITICAL)
    return pgserver


def start_embedded(pgdata: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or join) the embedded server on ``pgdata`` and return its connection URL.

    ``delete_on_exit`` (for throwaway servers) stops the server and deletes ``pgdata`` when the
    last process using it exits; otherwise the server outlives this process.
    """
    pgserver = _pgserver()
    pgdata = Path(pgdata).expanduser().resolve()
    # made here, race-free: pgserver creates a missing pgdata with exist_ok=False before taking its
    # start-up lock, so two processes starting on a fresh home raced and one failed (FileExistsError);
    # an empty pgdata is initialised under the lock like a missing one
    pgdata.mkdir(parents=True, exist_ok=True)
    _forget_stopped(pgdata)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="delete" if delete_on_exit else None)
    except Exception as exc:
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no server log)"
        raise DatabaseUnavailableError(
            f"Could not start the embedded PostgreSQL in {pgdata} ({exc})\nServer log tail:\n{tail}\n"
            "If the directory is damaged, move it away and run again to start fresh, "
            "or set T2C_DATABASE_URL to use an external PostgreSQL."
        ) from exc
    return server.get_uri()


def _forget_stopped(pgdata: Path) -> None:
    """pgserver keeps one server object per data directory in this process and hands it out again; once
    that server was stopped (``t2c db stop``, a crash, an outage) the object is stale and would never
    start it again, so a long-running process (``t2c serve``) could not recover. Forget it."""
    from pgserver.postgres_server import PostgresServer

    cached = PostgresServer._instances.get(pgdata)
    if cached is not None and running_pid(pgdata) is None:
        del PostgresServer._instances[pgdata]


def running_pid(pgdata: Path) -> int | None:
    """The postmaster pid of a server running on ``pgdata``, or None."""
    from pgserver.utils import PostmasterInfo

    _pgserver()
    info = PostmasterInfo.read_from_pgdata(Path(pgdata).expanduser().resolve())
    return info.pid if info is not None and info.is_running() else None


def stop_embedded(pgdata: Path) -> bool:
    """Stop the server running on ``pgdata``; return whether one was running."""
    pgdata = Path(pgdata).expanduser().resolve()
    if running_pid(pgdata) is None:
        return False
    pgserver = _pgserver()
    user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs PostgreSQL as this user under root
    try:
        pgserver.pg_ctl(["-w", "-t", "120", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=150)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        # pg_ctl also fails when the server was already shutting down (another process stopped it)
        # or took longer than its wait on a loaded machine: what matters is whether it still runs
        deadline = time.monotonic() + 30
        while running_pid(pgdata) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        if running_pid(pgdata) is not None:
            raise DatabaseUnavailableError(f"Could not stop the embedded PostgreSQL in {pgdata}: {exc}") from exc
    return True
