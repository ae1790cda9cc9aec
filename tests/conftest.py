"""Shared fixtures: one throwaway embedded PostgreSQL (pgserver + pgvector) for the whole suite,
and a fresh database per test that needs one."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

# Tests never reach the network: hub lookups must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own T2C_HOME and no external database unless it sets one; embedded
    servers outlive their commands by design, so any a test started under tmp_path is stopped."""
    from t2c_monitor.settings import reset_settings_cache
    from t2c_monitor.store.embedded import stop_embedded

    monkeypatch.setenv("T2C_HOME", str(tmp_path / "t2c-home"))
    monkeypatch.delenv("T2C_DATABASE_URL", raising=False)
    reset_settings_cache()
    yield
    reset_settings_cache()
    for pid_file in tmp_path.glob("**/postmaster.pid"):
        stop_embedded(pid_file.parent)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the suite's embedded PostgreSQL; it is deleted when the test session ends.

    Its data lives outside pytest's temp root, which pytest prunes to the newest few sessions:
    a second pytest run on the machine must not delete this server's files under it.
    """
    from t2c_monitor.store.embedded import start_embedded
    from t2c_monitor.store.engine import normalise_url

    root = Path(tempfile.mkdtemp(prefix="t2c-test-pg-"))
    return normalise_url(start_embedded(root / "data", delete_on_exit=True))


@pytest.fixture
def database_url(pg_server_url: str) -> Iterator[str]:
    """A new, empty database on the suite's server (with pgvector available), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database migrated to head."""
    from t2c_monitor.store import migrate
    from t2c_monitor.store.engine import make_engine

    eng = make_engine(database_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
