"""The embedded PostgreSQL (with pgvector) that runs when no external database is configured.

It lives in ``<home>/pgdata`` and is reused across runs. pgserver serialises start-up with an
inter-process lock and counts the processes using a data directory, so a second ``t2c`` process
joins the running server instead of starting another on the same files; the server stops when the
last process using it exits.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from t2c_monitor.errors import DatabaseUnavailableError


def start_embedded(pgdata: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or join) the embedded server on ``pgdata`` and return its connection URL."""
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # pgserver keeps its lock in the runtime dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pgdata = Path(pgdata).expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="delete" if delete_on_exit else "stop")
    except Exception as exc:
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no server log)"
        raise DatabaseUnavailableError(
            f"Could not start the embedded PostgreSQL in {pgdata}: {exc}. Server log tail:\n{tail}\n"
            "If the directory is damaged, move it away and run again to start fresh, "
            "or set T2C_DATABASE_URL to use an external PostgreSQL."
        ) from exc
    return server.get_uri()
