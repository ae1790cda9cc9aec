"""The secrets sweep (issue 28): a distinct credential in every place one can live (the database URL's
user info, its query string's ``password`` and ``sslpassword``, a webhook URL's path, query and user info,
an SMTP password, S3 keys in the environment, an image source URI's user info), then a small week through
the CLI's real Prefect flow runs: a baseline, days with a corrupt image, a manifest of unreachable remote
images, a source that does not exist, an audit whose alerts go to a live receiver, a mail server, a file
and a closed port, `t2c alerts retry`, a report, the database commands, a database that does not answer,
and the monitor's schedules served. Then every credential is looked for in every file written, every row
of every table, Prefect's database (flow-run parameters, states, logs, deployments), every log record,
every command's output and every exception; each place one is found is named."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import signal
import socket
import threading
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import apply_tiny, drop_database, make_database, write_images, write_png
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from t2c_monitor.cli import app
from t2c_monitor.receiver import WebhookReceiver
from t2c_monitor.settings import reset_settings_cache

# only [A-Za-z0-9-]: the same text percent-encoded, JSON-escaped or quoted, so a plain search finds every copy
SECRETS = {
    "database URL user info": "S3CRET-dburl-userinfo-7f3a",
    "database URL ?password=": "S3CRET-dburl-query-41c9",
    "database URL ?sslpassword=": "S3CRET-sslpassword-9b2e",
    "webhook URL path": "S3CRET-webhook-path-5d17",
    "webhook URL ?token=": "S3CRET-webhook-token-c3a8",
    "webhook URL user info": "S3CRET-webhook-userinfo-0e61",
    "SMTP password": "S3CRET-smtp-2e6f",
    "AWS_ACCESS_KEY_ID": "S3CRET-awskey-0d4b",
    "AWS_SECRET_ACCESS_KEY": "S3CRET-awssecret-8a1c",
    "source URI user info": "S3CRET-source-userinfo-6e0d",
}
# text that is not secret and must be found where the sweep looks, or the sweep looks at nothing
CANARIES = {"Prefect's database file": "no-such-folder", "Prefect flow run": '"batch_id":"day-2"',
            "Prefect flow-run logs": "alert 2 to dead", "Prefect deployments": "ingest-sweep",
            "table image": "broken.png", "table alert": "Drift on monitor sweep", "log records": "alert 3 sent to mail",
            "file": "Drift on monitor sweep", "output of `t2c ingest": '"n_failed": 1'}
HOOK_ENV, DEAD_ENV, MONITOR = "T2C_SWEEP_HOOK", "T2C_SWEEP_DEAD", "sweep"


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def secret_database(pg_server_url: str):
    """A fresh database owned by a role whose password is a secret; its URL carries the user-info password,
    ``password`` and ``sslpassword`` in the query string, and an innocent ``application_name``. The suite's
    server trusts local connections, so the server ignores the passwords: they only have to live in the URL."""
    admin_url = make_database(pg_server_url)
    role = f"sweeper_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))  # creating it needs a superuser
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRETS['database URL user info']}'"))
        conn.execute(text(f'ALTER DATABASE "{make_url(admin_url).database}" OWNER TO {role}'))
        conn.execute(text(f"ALTER SCHEMA public OWNER TO {role}"))
    admin.dispose()
    socket_dir = make_url(pg_server_url).query["host"]
    query = (f"password={SECRETS['database URL ?password=']}&sslpassword={SECRETS['database URL ?sslpassword=']}"
             "&application_name=t2c-sweep")
    secret_url = (f"postgresql://{role}:{SECRETS['database URL user info']}@/{make_url(admin_url).database}"
                  f"?host={socket_dir}&{query}")
    unreachable = f"postgresql://{role}:{SECRETS['database URL user info']}@127.0.0.1:{closed_port()}/x?{query}"
    yield secret_url, unreachable, admin_url
    drop_database(pg_server_url, admin_url)
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
    admin.dispose()


@pytest.fixture
def smtp_server():
    """A local SMTP server that takes AUTH LOGIN/PLAIN without TLS; yields (port, the passwords it was given)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    logins: list[str] = []

    class Inbox:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            return "250 OK"

    def authenticate(server, session, envelope, mechanism, auth_data):
        logins.append(auth_data.password.decode())
        return AuthResult(success=True)

    port = closed_port()  # aiosmtpd's start() connects to its port, so it needs a real one
    controller = Controller(Inbox(), hostname="127.0.0.1", port=port, authenticator=authenticate,
                            auth_require_tls=False)
    controller.start()
    yield port, logins
    controller.stop()


class Recorder(logging.Handler):
    """Every log record of this process, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def every_log():
    recorder = Recorder()
    names = ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra", "t2c_monitor", "httpx")
    for name in names:
        logging.getLogger(name).addHandler(recorder)
    yield recorder
    for name in names:
        logging.getLogger(name).removeHandler(recorder)


class Commands:
    """`t2c` commands run in this process; each one's output and exception kept under its own name."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.seen: dict[str, str] = {}

    def __call__(self, *args: str, ok: bool = True, **env: str):
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)
        reset_settings_cache()
        run = CliRunner().invoke(app, list(args))
        failed = run.exception is not None and not isinstance(run.exception, SystemExit)
        trace = "".join(traceback.format_exception(*run.exc_info)) if failed else ""
        label = f"output of `t2c {' '.join(args)}`" + (f" (run {len(self.seen)})" if env else "")
        self.seen[label] = run.output + trace
        if ok:
            assert run.exit_code == 0, run.output + trace
        return run


def corrupt_day(folder: Path) -> Path:
    """A small day of images and one file that claims to be a PNG but is not."""
    write_images(folder, 16, seed=3)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    return folder


def dark_day(folder: Path, n: int = 48) -> Path:
    import numpy as np

    rng = np.random.default_rng(4)
    for i in range(n):  # a night shift: every picture dark
        write_png(folder / f"img-{i:03d}.png", tuple(int(c) for c in rng.integers(0, 25, 3)), seed=900 + i)
    return folder


def remote_manifest(path: Path, port: int) -> Path:
    """A manifest of images on an FTP server (fsspec reads user:password@ from the URI) that is not there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "camera"])
        for i in range(2):
            writer.writerow([f"ftp://cam:{SECRETS['source URI user info']}@127.0.0.1:{port}/day/{i}.png", "north"])
    return path


def configure(db, tiny_monitor_dir: Path, inputs: Path, home: Path, block: str) -> Path:
    """The tiny monitor as ``sweep`` with four channels (live webhook, webhook to a closed port, e-mail, file)
    and schedules (a yearly audit, a local inbox every 30 days); returns the monitors file."""
    (inputs / "inbox").mkdir(parents=True, exist_ok=True)
    return apply_tiny(db, tiny_monitor_dir, inputs, name=MONITOR,
                      alerts={"channels": ["hook", "dead", "mail", "log"], "retries": 0, "quiet_period": "0s"},
                      schedules={"audit_cron": "0 0 1 1 *", "inbox": str(inputs / "inbox"), "ingest_interval": "30d"},
                      channels={"hook": {"type": "webhook", "url_env": HOOK_ENV, "timeout_s": 5},
                                "dead": {"type": "webhook", "url_env": DEAD_ENV, "timeout_s": 2},
                                "mail": {"type": "email", "credentials": block, "to": ["oncall@example.com"]},
                                "log": {"type": "file", "path": str(home / "alerts" / "alerts.jsonl")}})


def remote_inbox(t2c: Commands, monitor_file: Path) -> Path:
    """The same monitor with an inbox on an FTP server, its password in the URI, applied through `t2c monitor
    apply`: refused or recorded (and then served below), the URI's password must not come out."""
    inbox = f"ftp://cam:{SECRETS['source URI user info']}@127.0.0.1:{closed_port()}/inbox/"
    local = str(monitor_file.parent / "inbox")
    remote = monitor_file.with_name("monitors-remote-inbox.yaml")
    remote.write_text(monitor_file.read_text().replace(local, inbox))
    assert inbox in remote.read_text()
    t2c("monitor", "apply", str(remote), "--json", ok=False)
    return remote


def save_mail_block(port: int) -> str:
    from prefect_email import EmailServerCredentials

    name = f"t2c-sweep-{uuid.uuid4().hex[:8]}"
    EmailServerCredentials(smtp_server="127.0.0.1", smtp_port=port, smtp_type="INSECURE", username="t2c",
                           password=SECRETS["SMTP password"]).save(name)
    return name


def the_week(t2c: Commands, data: Path) -> None:
    """A baseline, a clean day with a corrupt file, a dark day, a manifest of unreachable remote images, a
    source that does not exist and a remote folder holding a password, as CLI flow runs; then the audit with its
    alerts, a retry, the reports, and the commands that show the database and what it holds."""
    t2c("ingest", str(write_images(data / "ref", 48, seed=1)[0].parent), "-m", MONITOR, "--batch-id", "ref", "--json")
    t2c("baseline", "build", "-m", MONITOR, "--batches", "ref", "--json")
    day1 = t2c("ingest", str(corrupt_day(data / "day-1")), "-m", MONITOR, "--batch-id", "day-1", "--json")
    assert '"n_failed": 1' in day1.stdout
    t2c("ingest", str(dark_day(data / "day-2")), "-m", MONITOR, "--batch-id", "day-2", "--json")
    remote = t2c("ingest", str(remote_manifest(data / "manifests" / "remote.csv", closed_port())), "-m", MONITOR,
                 "--batch-id", "remote", "--json", ok=False)
    assert '"n_failed": 2' in remote.stdout or remote.exit_code != 0, remote.output
    missing = t2c("ingest", str(data / "no-such-folder"), "-m", MONITOR, "--batch-id", "gone", ok=False)
    assert missing.exit_code != 0
    remote_folder = f"ftp://cam:{SECRETS['source URI user info']}@127.0.0.1:{closed_port()}/day/"
    assert t2c("ingest", remote_folder, "-m", MONITOR, "--batch-id", "ftp", ok=False).exit_code != 0
    audit = t2c("audit", "-m", MONITOR, "--batches", "day-2", "--json")
    result = json.loads(audit.stdout.strip().splitlines()[-1])
    statuses = {a["channel"]: a["status"] for a in result["alerts"]}
    assert statuses == {"hook": "sent", "dead": "failed", "mail": "sent", "log": "sent"}, result["alerts"]
    t2c("alerts", "retry", "-m", MONITOR, "--json", ok=False)  # the closed port fails again
    t2c("report", "-m", MONITOR, "--audit", str(result["id"]), "--json")
    t2c("report", "digest", "-m", MONITOR, "--no-refresh", "--json")
    for command in (("db", "url"), ("db", "status", "--json"), ("batches", "list", "-m", MONITOR),
                    ("audit", "list", "-m", MONITOR), ("monitor", "list", "--json")):
        t2c(*command, ok=False)


def unreachable_database(t2c: Commands, url: str, data: Path) -> None:
    """The same credentials in a URL whose server does not answer (a command's message and a flow run that
    fails), in one whose port is not a number, and in one that names another database system."""
    userinfo, query = url.split("@")[0], url.split("?")[1]
    for wrong in (url, f"{userinfo}@127.0.0.1:port/x?{query}", f"mysql{userinfo[len('postgresql'):]}@h/x?{query}"):
        assert t2c("db", "status", ok=False, T2C_DATABASE_URL=wrong).exit_code != 0
    assert t2c("ingest", str(data / "ref"), "-m", MONITOR, ok=False, T2C_DATABASE_URL=url).exit_code != 0


def serve_briefly(t2c: Commands, monkeypatch: pytest.MonkeyPatch) -> None:
    """`t2c serve` in this process: the monitor's deployments registered on the Prefect API, then Ctrl-C once
    it serves (a real run of a served deployment costs a process and the models' load: the inbox flow's
    parameters are what its deployment stores, searched below)."""
    import flows.deployments as deployments

    serve = deployments.serve_monitors

    def stop_once_ready(names, *, on_ready=None, **kwargs):
        def ready(served):
            on_ready(served)
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()

        return serve(names, on_ready=ready, **kwargs)

    monkeypatch.setattr(deployments, "serve_monitors", stop_once_ready)
    run = t2c("serve", "-m", MONITOR)
    assert "ingest-inbox/ingest-sweep" in run.output and "stopped serving" in run.output, run.output


def prefect_places(since: datetime) -> dict[str, str | bytes]:
    """Prefect's database as files (after the log worker has flushed) and, through its API, this test's flow
    runs (parameters, states), their task runs and logs, and the deployments."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    APILogWorker.drain_all()
    places: dict[str, str | bytes] = {}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)))
        assert runs, "the CLI's flows ran on the test Prefect API"
        for run in runs:
            places[f"Prefect flow run {run.name} ({run.state_name}): parameters and state"] = run.model_dump_json()
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            places[f"Prefect task runs of flow run {run.name}"] = " ".join(t.model_dump_json() for t in tasks)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])))
        places["Prefect flow-run logs (API)"] = " ".join(log.message for log in logs)
        places["Prefect deployments (API)"] = " ".join(d.model_dump_json() for d in client.read_deployments())
    database = Path(make_url(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()).database)
    for path in database.parent.glob(f"{database.name}*"):
        places[f"Prefect's database file {path.name}"] = path.read_bytes()
    return places


def postgres_places(url: str) -> dict[str, str]:
    """Every row of every table of our database, as text."""
    engine = create_engine(url)
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        rows = {f"table {t}": str(conn.execute(text(f'SELECT string_agg(x::text, E\'\\n\') FROM "{t}" x')).scalar())
                for t in tables}
    engine.dispose()
    assert {"table batch", "table image", "table alert", "table audit", "table monitor"} <= set(rows)
    return rows


def file_places(roots: list[Path], inputs: set[Path]) -> dict[str, bytes]:
    """Every file under ``roots`` (bytes), except the inputs this test wrote itself."""
    places = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.resolve() not in inputs:
                with contextlib.suppress(OSError):  # a file another process removed meanwhile
                    places[f"file {path}"] = path.read_bytes()
    return places


def test_no_credential_is_written_logged_stored_or_shown_anywhere(
        prefect_harness, secret_database, smtp_server, tiny_monitor_dir, tmp_path, monkeypatch, caplog, capfd,
        every_log):
    from prefect.settings import get_current_settings

    from t2c_monitor.settings import get_settings
    from t2c_monitor.store import open_database

    secret_url, unreachable, admin_url = secret_database
    smtp_port, logins = smtp_server
    since, data = datetime.now(UTC), tmp_path / "data"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SECRETS["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS["AWS_SECRET_ACCESS_KEY"])
    monkeypatch.setenv("T2C_DATABASE_URL", secret_url)
    monkeypatch.setenv("T2C_DEVICE", "cpu")
    monkeypatch.setenv(DEAD_ENV, f"http://hook:{SECRETS['webhook URL user info']}@127.0.0.1:{closed_port()}"
                                 f"/hooks/{SECRETS['webhook URL path']}?token={SECRETS['webhook URL ?token=']}")
    reset_settings_cache()
    db = open_database()
    home = get_settings().home
    assert home.is_relative_to(tmp_path), "every file the home holds is searched"
    monitor_file = configure(db, tiny_monitor_dir, tmp_path / "inputs", home, save_mail_block(smtp_port))
    db.engine.dispose()
    t2c, inputs = Commands(monkeypatch), set()
    with WebhookReceiver(path=f"/hooks/{SECRETS['webhook URL path']}") as receiver:
        monkeypatch.setenv(HOOK_ENV, f"{receiver.url}?token={SECRETS['webhook URL ?token=']}")
        inputs.add(remote_inbox(t2c, monitor_file).resolve())
        the_week(t2c, data)
        assert len(receiver.bodies) == 1 and SECRETS["webhook URL ?token="] in receiver.paths[0]
    assert logins == [SECRETS["SMTP password"]], "the mail server was given the secret password"
    serve_briefly(t2c, monkeypatch)
    unreachable_database(t2c, unreachable, data)
    monkeypatch.setenv("T2C_DATABASE_URL", secret_url)
    reset_settings_cache()

    places: dict[str, str | bytes] = {**t2c.seen, **prefect_places(since), **postgres_places(admin_url)}
    prefect_home = Path(get_current_settings().home)
    inputs |= {monitor_file.resolve(), (data / "manifests" / "remote.csv").resolve()}
    places.update(file_places([tmp_path, prefect_home], inputs))
    captured = capfd.readouterr()
    places.update({"log records": "\n".join(every_log.lines), "caplog": caplog.text,
                   "process stdout": captured.out, "process stderr": captured.err})
    places = {where: c.decode("utf-8", "replace") if isinstance(c, bytes) else c for where, c in places.items()}
    assert_found(CANARIES, places, "the sweep reads live data: ")
    leaks = {name: found for name, secret in SECRETS.items() if (found := where_found(secret, places))}
    assert not leaks, "credentials found:\n" + "\n".join(
        f"- {name} ({SECRETS[name]}):\n    " + "\n    ".join(where) for name, where in leaks.items())


def where_found(needle: str, places: dict[str, str]) -> list[str]:
    """The places holding ``needle``, each with the text around its first occurrence."""
    out = []
    for where, body in places.items():
        if (at := body.find(needle)) >= 0:
            out.append(f"{where}: ...{body[max(0, at - 100):at + len(needle) + 60]!r}...")
    return out


def assert_found(canaries: dict[str, str], places: dict[str, str], why: str) -> None:
    for prefix, needle in canaries.items():
        assert any(w.startswith(prefix) for w in where_found(needle, places)), f"{why}{needle!r} not in {prefix}"
