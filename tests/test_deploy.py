"""The deployable stack, checked without a container engine: docker-compose's file validates (Debian's
`docker-compose`), every file it and Grafana's provisioning name exists, the Dockerfile copies what is
there, and the roles' SQL runs on a real database, where the read-only role cannot write."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"db", "migrate", "prefect", "worker", "dask-scheduler", "dask-worker", "grafana", "evidently"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_validates_with_the_example_env_and_names_files_that_exist(tmp_path):
    document = compose()
    assert set(document["services"]) == SERVICES
    for name, service in document["services"].items():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert (ROOT / host).exists(), f"service {name} mounts {host}, which is not in the repository"
    assert document["services"]["worker"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert set(document["services"]["dask-worker"]["profiles"]) == {"dask"}

    needed = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert needed <= set(example), f".env.example lacks {needed - set(example)}"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines(), "the real .env is never committed"

    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("needs Debian's docker-compose (.ci/run installs it)")
    env = {k: v for k, v in os.environ.items() if k not in needed}
    checked = subprocess.run([binary, "--env-file", str(ROOT / ".env.example"), "config", "-q"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
    (tmp_path / "empty.env").write_text("")
    missing = subprocess.run([binary, "--env-file", str(tmp_path / "empty.env"), "config", "-q"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "in .env" in missing.stderr, "a missing password is named, not defaulted"


def test_grafana_provisioning_and_the_dockerfile_name_what_exists():
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provisioning = ROOT / "dashboards" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "t2c.yaml").read_text())["datasources"][0]
    assert datasource["user"] == "t2c_reader" and "T2C_READER_PASSWORD" in str(datasource["secureJsonData"])
    provider = yaml.safe_load((provisioning / "dashboards" / "t2c.yaml").read_text())["providers"][0]
    in_container = {target: host for host, target in mounts.items()}
    assert provider["options"]["path"] in in_container, "the dashboards' folder is mounted where Grafana looks"
    assert list((ROOT / in_container[provider["options"]["path"]]).glob("*.json")), "and it holds dashboards"

    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which is not in the repository"
    assert "pip wheel" in dockerfile and "/wheels/*.whl" in dockerfile, "installed from its wheel, not editable"
    assert "ARG TORCH_INDEX" in dockerfile


def psql(url: str, *args: str) -> subprocess.CompletedProcess:
    from pgserver._commands import POSTGRES_BIN_PATH

    parsed = make_url(url)
    return subprocess.run([POSTGRES_BIN_PATH / "psql", "-h", parsed.query["host"], "-U", parsed.username or "postgres",
                           "-d", parsed.database, "-v", "ON_ERROR_STOP=1", *args], capture_output=True, text=True,
                          timeout=120,
                          env={**os.environ, "LD_LIBRARY_PATH": str(POSTGRES_BIN_PATH.parents[2] / "pgserver.libs")})


def test_the_roles_sql_makes_an_owner_that_migrates_and_a_reader_that_cannot_write(database_url):
    from t2c_monitor.store import migrate
    from t2c_monitor.store.engine import make_engine

    for _ in range(2):  # safe to run again
        done = psql(database_url, "-v", "app_password=app-secret", "-v", "reader_password=reader-secret",
                    "-f", str(ROOT / "deploy" / "postgres" / "roles.sql"))
        assert done.returncode == 0, done.stderr
    url = make_url(database_url)
    app = make_engine(url.set(username="t2c_app").render_as_string(hide_password=False))
    reader = create_engine(url.set(username="t2c_reader").render_as_string(hide_password=False))
    try:
        migrate.upgrade(app)  # the application, not a superuser, owns the schema and migrates it
        with app.begin() as conn:
            assert not conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
            owner = conn.execute(text("SELECT tableowner FROM pg_tables WHERE tablename = 'monitor'")).scalar()
        assert owner == "t2c_app"
        with reader.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM monitor")).scalar() == 0, "reads every table"
        for statement in ("UPDATE monitor SET name = name", "DELETE FROM monitor", "CREATE TABLE sneaky (x int)"):
            with reader.connect() as conn, pytest.raises(Exception, match="read-only|permission denied"):
                conn.execute(text(statement))
    finally:
        app.dispose()
        reader.dispose()
