"""Opening the database: embedded by default, external when configured, clear errors otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from t2c_monitor.errors import DatabaseUnavailableError, ExtensionMissingError
from t2c_monitor.settings import Settings, get_settings
from t2c_monitor.store import migrate, open_database
from t2c_monitor.store.engine import make_engine, mask_url, normalise_url


def test_embedded_database_starts_migrates_and_is_reused(tmp_path):
    settings = Settings(home=tmp_path / "state")
    db = open_database(settings)
    assert db.embedded
    assert migrate.status(db.engine).at_head
    assert str(settings.pgdata) in str(db.engine.url.query.get("host", ""))
    with db.session() as s:
        s.execute(text("INSERT INTO encoder (name, weights_sha256, feature_dim) VALUES ('e', 'x', 8)"))
    db.engine.dispose()

    again = open_database(settings)  # same home: the same data is there
    with again.session() as s:
        assert s.execute(text("SELECT name FROM encoder")).scalars().all() == ["e"]
    again.engine.dispose()


def test_external_url_is_used_and_never_falls_back(database_url, tmp_path):
    settings = Settings(home=tmp_path / "state", database_url=database_url)
    db = open_database(settings)
    assert not db.embedded
    assert migrate.status(db.engine).at_head
    assert not settings.pgdata.exists()
    db.engine.dispose()


def test_unreachable_url_fails_fast_with_masked_password(tmp_path):
    url = "postgresql://monitor:s3cret-pw@127.0.0.1:9/t2c"  # port 9 (discard): nothing listens on loopback
    settings = Settings(home=tmp_path / "state", database_url=url, connect_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        open_database(settings)
    message = str(info.value)
    assert "127.0.0.1:9/t2c" in message and "monitor:***@" in message
    assert "s3cret-pw" not in message
    assert "T2C_DATABASE_URL" in message
    assert time.monotonic() - started < 10
    assert not settings.pgdata.exists(), "must not fall back to the embedded server"


def test_urls_are_normalised_and_masked():
    assert normalise_url("postgres://u:p@h/db").startswith("postgresql+psycopg2://u:p@h/db")
    assert mask_url("postgresql://u:p@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    from t2c_monitor.errors import ConfigError

    with pytest.raises(ConfigError, match="PostgreSQL"):
        normalise_url("sqlite:///x.db")


@pytest.fixture(scope="module")
def server_without_pgvector() -> str:
    """A real PostgreSQL 16 (pgserver's build) from a copy of its install tree without pgvector."""
    import pgserver
    from pgserver._commands import POSTGRES_BIN_PATH

    root = Path(tempfile.mkdtemp(prefix="t2c-novector-"))
    install = root / "pginstall"
    shutil.copytree(POSTGRES_BIN_PATH.parent, install, symlinks=True)
    for control in (install / "share" / "postgresql" / "extension").glob("vector*"):
        control.unlink()
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    libs = POSTGRES_BIN_PATH.parents[2] / "pgserver.libs"  # the binaries' rpath is relative to the package
    kwargs = {"env": {**os.environ, "LD_LIBRARY_PATH": str(libs)}}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root; pgserver uses this user too
        from pgserver.utils import ensure_user_exists

        ensure_user_exists("pgserver")
        kwargs["user"] = "pgserver"
        os.chmod(root, 0o755)
        shutil.chown(root, "pgserver")
        shutil.chown(sock, "pgserver")
    bin_ = install / "bin"
    subprocess.run([bin_ / "initdb", "-D", data, "--auth=trust", "-U", "postgres"], check=True,
                   capture_output=True, **kwargs)
    subprocess.run([bin_ / "pg_ctl", "-D", data, "-w", "-o", f'-h "" -k {sock}', "-l", root / "log", "start"],
                   check=True, capture_output=True, **kwargs)
    yield f"postgresql://postgres@/postgres?host={sock}"
    subprocess.run([bin_ / "pg_ctl", "-D", data, "-w", "-m", "immediate", "stop"], capture_output=True, **kwargs)
    shutil.rmtree(root, ignore_errors=True)
    del pgserver


def test_server_without_pgvector_says_how_to_install_it(server_without_pgvector, tmp_path):
    settings = Settings(home=tmp_path / "state", database_url=server_without_pgvector)
    with pytest.raises(ExtensionMissingError) as info:
        open_database(settings)
    message = str(info.value)
    assert "pgvector" in message and "apt install postgresql-<major>-pgvector" in message
    engine = make_engine(server_without_pgvector)
    assert migrate.current(engine) is None, "nothing may be migrated on a server without pgvector"
    engine.dispose()


def test_concurrent_demos_share_one_embedded_server(tmp_path):
    """Two `t2c db up` processes at once: both succeed on one server and the schema is intact."""
    env = {**os.environ, "T2C_HOME": str(tmp_path / "state")}
    env.pop("T2C_DATABASE_URL", None)
    t2c = Path(sys.executable).parent / "t2c"
    procs = [subprocess.Popen([t2c, "db", "up", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        assert '"schema_at_head": true' in out
    db = open_database(Settings(home=tmp_path / "state"))
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    assert migrate.status(db.engine).at_head
    db.engine.dispose()


def test_an_empty_pgdata_directory_is_initialised_like_a_missing_one(tmp_path):
    """start_embedded makes pgdata itself before pgserver looks (pgserver's own mkdir raced between
    two processes starting at once): an existing empty directory must start a fresh server."""
    from t2c_monitor.store.embedded import start_embedded

    (tmp_path / "pgdata").mkdir()
    engine = make_engine(start_embedded(tmp_path / "pgdata", delete_on_exit=True))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    from t2c_monitor.settings import reset_settings_cache

    monkeypatch.setenv("T2C_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("T2C_DEVICE", "cpu")
    reset_settings_cache()
    settings = get_settings()
    assert settings.home == (tmp_path / "h").resolve()
    assert settings.pgdata == settings.home / "pgdata"
    assert settings.device == "cpu" and settings.database_url is None


def test_flow_tasks_share_one_engine_and_reopen_one_that_stopped_answering(database_url, monkeypatch):
    import dataclasses

    from flows import common
    from t2c_monitor.settings import reset_settings_cache

    monkeypatch.setenv("T2C_DATABASE_URL", database_url)
    reset_settings_cache()
    first = common.database(migrate=True)
    assert common.database() is first, "every task of the process uses the same engine and pool"
    key = next(k for k, db in common._OPEN.items() if db is first)
    common._OPEN[key] = dataclasses.replace(first, engine=make_engine("postgresql://u@127.0.0.1:9/gone"))
    again = common.database()
    assert again.engine.url == first.engine.url
    with again.engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    common._dispose_open_databases()
    assert common._OPEN == {}
