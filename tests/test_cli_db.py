"""The `t2c` command line as a user runs it: a real process against a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

T2C = Path(sys.executable).parent / "t2c"


def run_t2c(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([T2C, *args], env=env, capture_output=True, text=True, timeout=180)


def test_db_commands_migrate_and_report(database_url):
    env = {"T2C_DATABASE_URL": database_url}
    status = run_t2c("db", "status", "--json", env_extra=env)
    assert status.returncode == 0, status.stderr
    before = json.loads(status.stdout)
    assert before["current"] is None and not before["at_head"] and not before["embedded"]

    up = run_t2c("db", "upgrade", env_extra=env)
    assert up.returncode == 0, up.stderr
    after = json.loads(run_t2c("db", "status", "--json", env_extra=env).stdout)
    assert after["at_head"] and after["pgvector"]

    down = run_t2c("db", "downgrade", "base", env_extra=env)
    assert down.returncode == 0, down.stderr
    assert json.loads(run_t2c("db", "status", "--json", env_extra=env).stdout)["current"] is None


def test_demo_prints_a_working_url_with_schema_at_head(tmp_path):
    result = run_t2c("db", "up", "--json", env_extra={"T2C_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["embedded"] and payload["schema_at_head"]
    assert payload["pgdata"] == str((tmp_path / "home" / "pgdata").resolve())
    # the printed URL really connects (password-less trust auth on the embedded server)
    from sqlalchemy import text

    from t2c_monitor.store.engine import make_engine

    engine = make_engine(payload["database_url"])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == payload["schema_revision"]
    engine.dispose()
    # and as printed it works in libpq tools too
    from pgserver._commands import POSTGRES_BIN_PATH

    psql = subprocess.run([POSTGRES_BIN_PATH / "psql", payload["database_url"], "-tAc",
                           "SELECT version_num FROM alembic_version"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LD_LIBRARY_PATH": str(POSTGRES_BIN_PATH.parents[2] / "pgserver.libs")})
    assert psql.stdout.strip() == payload["schema_revision"], psql.stderr


def test_unreachable_database_is_a_message_not_a_traceback():
    result = run_t2c("db", "status", env_extra={"T2C_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:9/x"})
    assert result.returncode == 2
    assert "Cannot connect to PostgreSQL at postgresql+psycopg2://u:***@127.0.0.1:9/x" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_help_is_fast_because_heavy_libraries_load_lazily():
    code = (
        "import sys; import t2c_monitor.cli as c; "
        "heavy = [m for m in ('torch', 'timm', 'open_clip', 'transformers', 'prefect') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"t2c imports {out} at start-up; import heavy libraries inside the commands"
    assert run_t2c("--help").returncode == 0
