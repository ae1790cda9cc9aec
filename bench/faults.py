"""Fault injection: real processes, the real embedded PostgreSQL, real files, real HTTP; figures, not hopes.

Scenarios (each a function here; ``tests/test_faults.py``, ``tests/test_faults_processes.py`` and
``tests/test_schedules.py`` run the short form of each in ``make test``):

* ``kill_ingest``: a real ``t2c ingest`` process killed with SIGKILL at a random moment, ``trials``
  times, then run again with the same batch id: the batch must end ``stored`` with exactly the
  rows of a clean run (same images, same status, same vectors; none twice), a killed batch must be
  listed as unfinished by ``t2c batches list``, and no process the killed one started may outlive
  it (the home's local Prefect server and embedded PostgreSQL are meant to stay: they are shared).
* ``kill_serve``: ``t2c serve``'s whole process group SIGKILLed while an inbox run is half-way, then
  served again: every inbox file in a stored batch exactly once, the interrupted batch closed, no orphan.
* ``database_outage`` and ``audit_outage``: the embedded PostgreSQL stopped during a ``t2c ingest`` and
  during a ``t2c audit``: the run must fail with a message (no traceback), leave only whole chunks and no
  half-written audit, and the next run, the server back, must complete.
* ``hostile_images``: a generated corpus of malformed files (byte flips, truncations and header lies over
  valid PNG, JPEG, WebP, GIF, TIFF and BMP; absurd dimensions; highly compressed huge PNGs): each must
  be recorded with a reason, none may crash the batch, and the slowest decode is reported.
* ``receivers_and_secrets``: webhook receivers that answer 503, answer after the sender's timeout, drop
  the connection or are not there: every alert must arrive at least once, repeats only where a timeout
  hid a delivery (the idempotency key tells the receiver); then the hook's token must appear in no log,
  no Prefect run log, no row of any table, no report and no command output.
* ``soak``: ``t2c serve`` with a file dropped into its inbox every few seconds and the database stopped
  for 10 s half-way: every file stored once, every scheduled audit run (Prefect's own record of the
  runs), serve alive after the outage, and the slope of its memory, its file handles and connections.

Full and read-only disks (reports, models cache) and concurrent ingests and audits are proven in
``tests/test_faults.py`` only: they are pass or fail, with no figure to report.

    python bench/faults.py [--kill-trials 10] [--hostile 600] [--images 60] [--soak-minutes 10]

It builds (or reuses, under ``T2C_MODELS``) the quick shapes world for its monitor. The last line of
stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

T2C = Path(sys.executable).parent / "t2c"


# ------------------------------------------------------------------------------------------ kills


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _shared_servers(env: dict[str, str]) -> set[int]:
    """Processes meant to outlive a command: the home's local Prefect server (and its children)."""
    record = Path(env["T2C_HOME"]) / "prefect" / "server.json"
    if not record.is_file():
        return set()
    pid = json.loads(record.read_text()).get("pid")
    return {pid, *_descendants(pid)} if pid else set()


def run_t2c(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(T2C), *args], env=env, capture_output=True, text=True, timeout=timeout)


def duplicate_rows(engine: Any, monitor: str, batch: str) -> int:
    """Rows of a batch beyond the first for the same image (by URI, and by content among stored ones)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT (count(*) - count(DISTINCT i.uri)) + (count(i.sha256) FILTER (WHERE i.status = 'ok') "
            "- count(DISTINCT i.sha256) FILTER (WHERE i.status = 'ok')) FROM image i "
            "JOIN batch b ON b.id = i.batch_id JOIN monitor m ON m.id = b.monitor_id "
            "WHERE m.name = :m AND b.external_id = :b"), {"m": monitor, "b": batch}).scalar_one())


def batch_rows(engine: Any, monitor: str, batch: str) -> dict[str, tuple[str, Any]]:
    """file name -> (status, vector) of a batch's images (``duplicate_rows`` counts any stored twice)."""
    import numpy as np
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT i.uri, i.status, i.embedding::text AS v FROM image i JOIN batch b ON b.id = i.batch_id "
            "JOIN monitor m ON m.id = b.monitor_id WHERE m.name = :m AND b.external_id = :b"),
            {"m": monitor, "b": batch}).all()
    out: dict[str, tuple[str, Any]] = {}
    for r in rows:
        name = Path(r.uri).name
        out[name] = (r.status, None if r.v is None else np.array(json.loads(r.v), dtype=np.float32))
    return out


def listed_batch(engine: Any, monitor: str, batch: str) -> dict[str, Any] | None:
    """The batch as `t2c batches list` lists it (its status, and what a rerun does), read the way that
    command reads it."""
    from sqlalchemy import text

    from t2c_monitor.cli.batches import rerun_note
    from t2c_monitor.store.batches import list_batches

    with engine.connect() as conn:
        monitor_id = conn.execute(text("SELECT id FROM monitor WHERE name = :m"), {"m": monitor}).scalar_one()
        rows = list_batches(conn, monitor_id, limit=1000)
    row = next((r for r in rows if r.external_id == batch), None)
    return None if row is None else {"status": row.status, "rerun": rerun_note(row, monitor)}


def same_rows(a: dict[str, tuple[str, Any]], b: dict[str, tuple[str, Any]]) -> bool:
    import numpy as np

    if set(a) != set(b):
        return False
    for name, (status, vector) in a.items():
        other_status, other = b[name]
        if status != other_status or (vector is None) != (other is None):
            return False
        if vector is not None and not np.allclose(vector, other, atol=1e-5):
            return False
    return True


@dataclass
class KillReport:
    trials: int = 0
    killed_unfinished: int = 0  # trials whose batch was caught part-way (listed as unfinished)
    listed_unfinished: int = 0  # of those, listed as unfinished with what a rerun does
    completed: int = 0  # reruns that ended stored with a clean run's rows
    duplicates: int = 0
    lost: int = 0  # images a clean run stores that a rerun did not
    orphans: int = 0  # processes started by a killed command still alive after it
    kill_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def batch_status(engine: Any, monitor: str, batch: str) -> str | None:
    """The batch's status, or None while no run has opened it."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT b.status FROM batch b JOIN monitor m ON m.id = b.monitor_id "
            "WHERE m.name = :m AND b.external_id = :b"), {"m": monitor, "b": batch}).scalar()


def _watch(process: subprocess.Popen, until: Any, *, seen: set[int] | None = None) -> float | None:
    """Poll until ``until()`` is true (seconds waited) or the process exits (None); collects its descendants
    into ``seen`` on the way (a killed process's children must be known before the kill)."""
    started = time.monotonic()
    while process.poll() is None:
        if seen is not None:
            seen |= set(_descendants(process.pid))
        if until():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def kill_ingest(env: dict[str, str], engine: Any, monitor: str, source: Path, *, trials: int, seed: int = 0,
                log: Any = print) -> KillReport:
    """See the module doc. ``env`` is the environment of the ``t2c`` processes (its home and database).

    The kill point is drawn per trial from the clean run's own phases: one trial in five before the
    batch opens (start-up: Prefect, models, the database), the rest at a random point between the batch
    opening (seen in the database) and the moment a clean run had stored it, so most kills catch the
    batch part-way, whatever the machine's speed."""
    rng = random.Random(seed)
    report = KillReport()
    run_t2c(env, "server", "up")  # the home's shared Prefect server, started before anything is timed
    clean = subprocess.Popen([str(T2C), "ingest", str(source), "--monitor", monitor, "--batch-id", "clean-run"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    to_open = _watch(clean, lambda: batch_status(engine, monitor, "clean-run") is not None)
    to_store = _watch(clean, lambda: batch_status(engine, monitor, "clean-run") == "stored")
    _, err = clean.communicate()
    if clean.returncode != 0 or to_open is None:
        raise RuntimeError(f"the clean run failed: {(err or '')[-2000:]}")
    to_store = to_store if to_store is not None else 1.0  # stored between two polls, just before the exit
    reference = batch_rows(engine, monitor, "clean-run")
    for trial in range(trials):
        batch = f"killed-{trial}"
        shared = _shared_servers(env)
        process = subprocess.Popen([str(T2C), "ingest", str(source), "--monitor", monitor, "--batch-id", batch],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children: set[int] = set()
        if rng.random() < 0.2:
            phase, at = "start-up", rng.uniform(0.2, 1.0) * to_open
            _watch(process, lambda deadline=time.monotonic() + at: time.monotonic() >= deadline, seen=children)
        else:
            opened = _watch(process, lambda b=batch: batch_status(engine, monitor, b) is not None, seen=children)
            phase, at = "batch open", rng.uniform(0.05, 0.95) * to_store
            _watch(process, lambda deadline=time.monotonic() + at: time.monotonic() >= deadline, seen=children)
            at += opened or 0.0
        children |= set(_descendants(process.pid))
        with contextlib.suppress(ProcessLookupError):  # it may have finished first: a trial all the same
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        report.trials += 1
        report.kill_seconds.append(round(at, 2))
        time.sleep(0.5)
        orphans = [pid for pid in children - shared - _shared_servers(env) if _alive(pid)]
        report.orphans += len(orphans)
        for pid in orphans:  # do not let one trial's leftovers disturb the next
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        state = listed_batch(engine, monitor, batch)
        if state is not None and state["status"] != "stored":
            report.killed_unfinished += 1
            report.listed_unfinished += bool(state["rerun"])
        rerun = run_t2c(env, "ingest", str(source), "--monitor", monitor, "--batch-id", batch, "--json")
        after = batch_rows(engine, monitor, batch)
        report.duplicates += duplicate_rows(engine, monitor, batch)
        status = (listed_batch(engine, monitor, batch) or {}).get("status")
        report.lost += len(set(reference) - set(after))
        if rerun.returncode == 0 and status == "stored" and same_rows(reference, after):
            report.completed += 1
        log(f"  kill {trial + 1}/{trials} ({phase}, {at:.1f} s): batch was "
            f"{state['status'] if state else 'not opened'}, rerun {'ok' if rerun.returncode == 0 else 'FAILED'}, "
            f"{len(orphans)} orphans")
    return report


# ------------------------------------------------------------------------------------------ database outage


@dataclass
class OutageReport:
    failed_cleanly: bool  # the run exited non-zero with a message, no traceback
    seconds_to_fail: float  # from the server's stop to the run's exit
    message: str  # the last line the run printed
    partial_chunks_ok: bool  # the rows visible after the outage are whole chunks (one transaction each)
    recovered: bool  # the next run (the server back) completed the batch with a clean run's rows

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _through_outage(env: dict[str, str], pgdata: Path, args: list[str], stop_after: float
                    ) -> tuple[int, str, float]:
    """Run `t2c ARGS`, stop the embedded PostgreSQL ``stop_after`` seconds in, start it again once the run has
    ended; the run's exit status, its stderr, and the seconds from the stop to its exit."""
    from t2c_monitor.store.embedded import start_embedded, stop_embedded

    process = subprocess.Popen([str(T2C), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    time.sleep(stop_after)
    stop_embedded(pgdata)
    stopped = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=600)
    finally:
        start_embedded(pgdata)
    return process.returncode, stderr, time.monotonic() - stopped


def database_outage(env: dict[str, str], pgdata: Path, engine_url: str, monitor: str, source: Path, *,
                    batch: str, chunk: int, reference: dict[str, tuple[str, Any]], stop_after: float) -> OutageReport:
    """Stop the embedded PostgreSQL ``stop_after`` seconds into a `t2c ingest` run, start it again once the
    run has ended, and run it again (``env`` names the server's URL, so nothing restarts it behind our back)."""
    from sqlalchemy import create_engine

    code, stderr, seconds = _through_outage(env, pgdata, ["ingest", str(source), "--monitor", monitor,
                                                          "--batch-id", batch], stop_after)
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    engine = create_engine(engine_url)
    try:
        partial = batch_rows(engine, monitor, batch)
        rerun = run_t2c(env, "ingest", str(source), "--monitor", monitor, "--batch-id", batch, "--json")
        after = batch_rows(engine, monitor, batch)
    finally:
        engine.dispose()
    return OutageReport(
        failed_cleanly=code != 0 and "Traceback" not in stderr,
        seconds_to_fail=round(seconds, 1), message=lines[-1][:300] if lines else "",
        partial_chunks_ok=len(partial) % chunk == 0 or len(partial) == len(reference),
        recovered=rerun.returncode == 0 and same_rows(reference, after))


@dataclass
class AuditOutageReport:
    failed_cleanly: bool  # the audit exited non-zero with a message, no traceback
    seconds_to_fail: float  # from the server's stop to the run's exit
    message: str
    half_written: int  # audits visible after the outage whose per-concept results are not all there
    recovered: bool  # the next audit, the server back, completed and stored its results whole

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def audit_outage(env: dict[str, str], pgdata: Path, engine_url: str, monitor: str, batch: str, *,
                 stop_after: float | None = None) -> AuditOutageReport:
    """Stop the embedded PostgreSQL ``stop_after`` seconds into a `t2c audit` of ``batch`` (a Prefect flow
    whose audit task retries I/O errors), start it again once the run has ended, and audit again. Without
    ``stop_after``, a clean audit is timed first and the outage starts at 60% of its time: a fixed delay
    lands after the end on a fast machine (the run then succeeds and nothing is tested)."""
    from sqlalchemy import create_engine, text

    if stop_after is None:
        started = time.monotonic()
        clean = run_t2c(env, "audit", "--monitor", monitor, "--batches", batch, "--no-alerts", "--json")
        if clean.returncode != 0:
            raise RuntimeError(f"the clean audit failed: {clean.stderr[-2000:]}")
        stop_after = 0.6 * (time.monotonic() - started)


    def audits(engine: Any) -> tuple[int, int]:
        """(audits, those whose stored results do not cover every concept of their bank)"""
        with engine.connect() as conn:
            return tuple(conn.execute(text(
                "SELECT count(*), count(*) FILTER (WHERE a.status = 'done' AND (SELECT count(*) FROM audit_result r "
                "WHERE r.audit_id = a.id) <> (SELECT count(*) FROM concept c JOIN monitor m ON c.bank_id = m.bank_id "
                "WHERE m.id = a.monitor_id)) FROM audit a")).one())

    engine = create_engine(engine_url)
    before, _ = audits(engine)
    engine.dispose()
    code, stderr, seconds = _through_outage(env, pgdata, ["audit", "--monitor", monitor, "--batches", batch,
                                                          "--no-alerts"], stop_after)
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    engine = create_engine(engine_url)
    try:
        _, half = audits(engine)
        rerun = run_t2c(env, "audit", "--monitor", monitor, "--batches", batch, "--no-alerts", "--json")
        after, half_after = audits(engine)
    finally:
        engine.dispose()
    return AuditOutageReport(
        failed_cleanly=code != 0 and "Traceback" not in stderr, seconds_to_fail=round(seconds, 1),
        message=lines[-1][:300] if lines else "", half_written=half + half_after,
        recovered=rerun.returncode == 0 and after > before)


# ------------------------------------------------------------------------------------------ soak


@dataclass
class SoakReport:
    minutes: float
    files: int  # files dropped into the inbox
    ingested: int  # distinct inbox files stored
    missed: int  # dropped files never stored
    duplicates: int
    audits: int  # audits done while serving
    audits_failed: int  # audits stored as failed while serving (a window with nothing new stores nothing)
    outage_survived: bool | None  # serve still up after the database outage, and both its inbox runs and its
    # scheduled audits stored results after it
    rss_mb: list[float]  # the serve process's resident memory, sampled
    rss_slope_mb_per_hour: float
    fds_first_last: tuple[int, int]
    connections_max: int
    runs_failed: int  # inbox batches left unfinished (a run the outage broke: its files went to the next one)
    audits_scheduled: int  # audit runs the scheduler created while serving that had a minute to finish
    audits_completed: int  # of those, the ones Prefect reports completed
    audit_states: dict[str, int]  # of those, how many ended in each Prefect state
    exit_code: int | None  # of serve, after SIGTERM
    stop_seconds: float  # from SIGTERM to exit

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["rss_mb"] = [round(x, 1) for x in self.rss_mb]
        return out


def _slope_per_hour(times: list[float], values: list[float]) -> float:
    import numpy as np

    if len(times) < 3:
        return 0.0
    return float(np.polyfit(np.array(times) / 3600.0, np.array(values), 1)[0])


def audit_runs(env: dict[str, str], since: datetime, until: datetime) -> list[str]:
    """The Prefect states of the audit runs scheduled in [since, until), from the home's local Prefect server."""
    import httpx

    from t2c_monitor.prefect_server import RECORD

    api = json.loads((Path(env["T2C_HOME"]) / "prefect" / RECORD).read_text())["api_url"]
    response = httpx.post(f"{api}/flow_runs/filter", timeout=30, json={
        "flows": {"name": {"any_": ["audit"]}}, "limit": 200,
        "flow_runs": {"expected_start_time": {"after_": since.isoformat(), "before_": until.isoformat()}}})
    response.raise_for_status()
    return [run["state_type"] for run in response.json()]


def soak(env: dict[str, str], engine: Any, images: list[Path], inbox: Path, *, minutes: float, every: float,
         outage: tuple[Path, float] | None = None, settle: float = 90.0, stderr: Path | None = None,
         until_audited: bool = False, log: Any = print) -> SoakReport:
    """`t2c serve` with ``images`` dropped into ``inbox`` one every ``every`` seconds for ``minutes``; optionally
    the embedded database (``outage``: its pgdata, and when to stop it for 10 s). Then at least ``settle``
    seconds, and up to two minutes more until every file is stored (and, ``until_audited``, a scheduled audit
    has tested an inbox batch: a short soak on a busy machine may otherwise end before one), SIGTERM, and the
    figures (module doc).
    The clock starts once serve is ready; its stderr goes to ``stderr`` (default: serve.stderr beside the
    inbox)."""
    import psutil
    from sqlalchemy import text

    from t2c_monitor.store.embedded import start_embedded, stop_embedded

    inbox.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        audits_before = conn.execute(text("SELECT count(*) FROM audit WHERE status = 'done'")).scalar_one()
    serve_started = datetime.now(UTC)
    server = start_serve(env, stderr or inbox.parent / "serve.stderr")
    started = time.monotonic()
    end = started + minutes * 60
    dropped: list[str] = []
    samples: list[tuple[float, float, int]] = []
    connections = 0
    outage_done = outage is None
    outage_ended = None
    next_drop = started
    def caught_up() -> bool:
        with engine.connect() as conn:
            held = set(conn.execute(text("SELECT i.uri FROM image i JOIN batch b ON b.id = i.batch_id WHERE "
                                         "b.external_id LIKE 'inbox-%' AND b.status = 'stored'")).scalars())
        if not set(dropped) <= held:
            return False
        if not until_audited:
            return True
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT count(*) FROM audit a WHERE a.status = 'done' AND a.started_at > :t AND EXISTS ("
                "SELECT 1 FROM batch b WHERE b.external_id LIKE 'inbox-%' AND a.batch_ids @> to_jsonb(b.id))"),
                {"t": serve_started}).scalar_one() > 0

    try:
        while True:
            now = time.monotonic()
            if now >= end + settle and (now >= end + settle + 120 or caught_up()):
                break  # settled, and every file stored (or two minutes more given up)
            if now < end and now >= next_drop and len(dropped) < len(images):
                source = images[len(dropped)]
                target = inbox / f"soak-{len(dropped):05d}{source.suffix}"
                target.with_suffix(".part").write_bytes(source.read_bytes())
                target.with_suffix(".part").rename(target)
                dropped.append(str(target))
                next_drop = now + every
            if not outage_done and now - started >= outage[1]:
                log(f"  soak: stopping the database for 10 s at {now - started:.0f} s")
                stop_embedded(outage[0])
                time.sleep(10)
                start_embedded(outage[0])
                outage_done = True
                outage_ended = datetime.now(UTC)
            proc = psutil.Process(server.pid)
            samples.append((now - started, proc.memory_info().rss / 2**20, proc.num_fds()))
            try:
                with engine.connect() as conn:
                    connections = max(connections, conn.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")).scalar_one())
            except Exception:  # noqa: BLE001 - the database is down on purpose during the outage
                engine.dispose()
            if server.poll() is not None:
                break
            time.sleep(2)
        alive = server.poll() is None
    finally:
        serve_ended = datetime.now(UTC)
        stop_asked = time.monotonic()
        stop_serve(server)
        stop_seconds = time.monotonic() - stop_asked
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT i.uri FROM image i JOIN batch b ON b.id = i.batch_id "
                                   "WHERE b.external_id LIKE 'inbox-%'")).scalars().all()
        audits = conn.execute(text("SELECT count(*) FROM audit WHERE status = 'done'")).scalar_one() - audits_before
        audits_failed = conn.execute(text("SELECT count(*) FROM audit WHERE status = 'failed' AND started_at > :t"),
                                     {"t": serve_started}).scalar_one()
        failed_batches = conn.execute(text("SELECT count(*) FROM batch WHERE external_id LIKE 'inbox-%' "
                                           "AND status <> 'stored'")).scalar_one()
        after_outage = outage_ended is not None and conn.execute(text(
            "SELECT count(*) FROM batch WHERE external_id LIKE 'inbox-%' AND status = 'stored' "
            "AND received_at > :t"), {"t": outage_ended}).scalar_one() > 0 and conn.execute(text(
            "SELECT count(*) FROM audit WHERE status = 'done' AND started_at > :t"),
            {"t": outage_ended}).scalar_one() > 0
    runs = audit_runs(env, serve_started, serve_ended - timedelta(seconds=60))
    states = {state: sum(1 for r in runs if r == state) for state in sorted(set(runs))}
    late_rss = [(t, r) for t, r, _ in samples if t > 60] or [(t, r) for t, r, _ in samples]
    return SoakReport(
        minutes=round((time.monotonic() - started) / 60, 2), files=len(dropped), ingested=len(set(stored)),
        missed=len(set(dropped) - set(stored)), duplicates=len(stored) - len(set(stored)), audits=audits,
        audits_failed=audits_failed,
        outage_survived=None if outage is None else alive and after_outage,
        rss_mb=[r for _, r, _ in samples[:: max(1, len(samples) // 20)]],
        rss_slope_mb_per_hour=round(_slope_per_hour([t for t, _ in late_rss], [r for _, r in late_rss]), 1),
        fds_first_last=(samples[0][2], samples[-1][2]) if samples else (0, 0), connections_max=connections,
        runs_failed=failed_batches,
        audits_scheduled=len(runs), audits_completed=states.get("COMPLETED", 0), audit_states=states,
        exit_code=server.returncode, stop_seconds=round(stop_seconds, 1))


# ------------------------------------------------------------------------------------------ killed serve


@dataclass
class ServeKillReport:
    killed_in_flight: bool  # serve's group was SIGKILLed while an inbox batch was half stored
    stored_when_killed: int  # images of that batch stored at the kill
    orphans: int  # processes serve had started still alive after the kill
    files: int
    missed: int  # inbox files in no stored batch once the restarted serve caught up
    duplicates: int  # inbox files stored twice
    interrupted_closed: bool  # the killed run's batch ended stored, keeping what it had
    exit_code: int | None  # of the restarted serve, after SIGTERM

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def start_serve(env: dict[str, str], stderr: Path, *, timeout: float = 300) -> subprocess.Popen:
    """`t2c serve` in a process group of its own, returned once it says it serves (its stderr appended to
    ``stderr``)."""
    before = stderr.read_text().count("stops serving") if stderr.exists() else 0
    with open(stderr, "a") as err:
        server = subprocess.Popen([str(T2C), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=err,
                                  start_new_session=True)
    ready_by = time.monotonic() + timeout
    while stderr.read_text().count("stops serving") == before and time.monotonic() < ready_by:
        if server.poll() is not None:
            raise RuntimeError(f"t2c serve exited ({server.returncode}): {stderr.read_text()[-2000:]}")
        time.sleep(1)
    return server


def stop_serve(server: subprocess.Popen) -> int | None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    return server.returncode


def kill_serve(env: dict[str, str], engine: Any, images: list[Path], inbox: Path, *, timeout: float = 240,
               log: Any = print) -> ServeKillReport:
    """``images`` dropped into the inbox of a monitor whose schedules ingest it, then `t2c serve`; its whole
    process group SIGKILLed (a container killed) once an inbox batch is half stored; serve started again and
    given until every file is in a stored batch."""
    from sqlalchemy import text

    inbox.mkdir(parents=True, exist_ok=True)
    dropped = []
    for i, source in enumerate(images):
        target = inbox / f"kill-{i:05d}{source.suffix}"
        target.write_bytes(source.read_bytes())
        dropped.append(str(target))
    stderr = inbox.parent / "serve-kill.stderr"

    def in_flight() -> tuple[int, int] | None:
        with engine.connect() as conn:
            row = conn.execute(text(
                "SELECT b.id, count(i.id) FROM batch b JOIN image i ON i.batch_id = b.id "
                "WHERE b.external_id LIKE 'inbox-%' AND b.status = 'embedding' GROUP BY b.id")).first()
        return (int(row[0]), int(row[1])) if row else None

    def stored() -> list[str]:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT i.uri FROM image i JOIN batch b ON b.id = i.batch_id WHERE b.external_id LIKE 'inbox-%' "
                "AND b.status = 'stored' AND i.uri LIKE '%/kill-%'")).scalars())

    server = start_serve(env, stderr)
    deadline, batch = time.monotonic() + timeout, None
    while batch is None and time.monotonic() < deadline:
        batch = in_flight()
        time.sleep(0.1)
    family = set(_descendants(server.pid)) - _shared_servers(env)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    time.sleep(1)
    orphans = [pid for pid in family if _alive(pid)]
    for pid in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    log(f"  serve killed {'while batch ' + str(batch[0]) + ' held ' + str(batch[1]) + ' images' if batch else 'idle'}"
        f", {len(orphans)} orphans")
    server = start_serve(env, stderr)
    deadline = time.monotonic() + timeout
    while len(set(stored()) & set(dropped)) < len(dropped) and time.monotonic() < deadline:
        time.sleep(2)
    code = stop_serve(server)
    uris = [u for u in stored() if u in set(dropped)]
    with engine.connect() as conn:
        closed = batch is not None and conn.execute(text("SELECT status FROM batch WHERE id = :b"),
                                                    {"b": batch[0]}).scalar_one() == "stored"
    return ServeKillReport(killed_in_flight=batch is not None, stored_when_killed=batch[1] if batch else 0,
                           orphans=len(orphans), files=len(dropped), missed=len(set(dropped) - set(uris)),
                           duplicates=len(uris) - len(set(uris)), interrupted_closed=closed, exit_code=code)


# ------------------------------------------------------------------------------------------ hostile files

FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "gif": "GIF", "tif": "TIFF", "bmp": "BMP"}


def _valid(fmt: str, rng: random.Random, size: int = 48) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_with_header(width: int, height: int, body: bytes = b"") -> bytes:
    """A PNG whose IHDR says ``width`` x ``height`` (CRC right), followed by ``body`` chunks (or nothing)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + body + chunk(b"IEND", b"")


def _compressed_png(width: int, height: int) -> bytes:
    """A valid PNG of zeros: megapixels in a few kilobytes (the zip-bomb-like case)."""
    import struct
    import zlib

    row = b"\x00" + b"\x00" * (3 * width)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    idat = struct.pack(">I", len(data)) + b"IDAT" + data + struct.pack(">I", zlib.crc32(b"IDAT" + data) & 0xFFFFFFFF)
    return _png_with_header(width, height, idat)


def hostile_corpus(out: Path, n: int, *, seed: int = 0, big: int = 4000) -> dict[str, str]:
    """Write ``n`` malformed image files to ``out`` (name -> how each was made): byte flips, truncations
    and header lies over valid files of every accepted format, absurd dimensions, compressed huge PNGs
    (``big`` x ``big`` zeros; the decode that takes longest) and non-images named as images."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, str] = {}
    makers = ["flip", "truncate", "header", "absurd", "compressed", "garbage", "empty"]
    weights = [40, 30, 12, 5, 2, 8, 3]
    for i in range(n):
        ext = rng.choice(list(FORMATS))
        kind = rng.choices(makers, weights)[0]
        if kind in ("header", "absurd", "compressed"):
            ext = "png"
        data = _valid(FORMATS[ext], rng) if kind in ("flip", "truncate") else b""
        if kind == "flip":
            data = bytearray(data)
            for _ in range(rng.randint(1, 24)):
                at = rng.randrange(len(data))
                data[at] ^= 1 << rng.randrange(8)
            data = bytes(data)
        elif kind == "truncate":
            data = data[: rng.randrange(1, len(data))]
        elif kind == "header":  # the header promises more than the data holds
            data = _png_with_header(rng.randint(100, 5000), rng.randint(100, 5000))
        elif kind == "absurd":
            data = _png_with_header(rng.choice([1, 2**31 - 1, 100_000]), rng.choice([2**31 - 1, 1, 70_000]))
        elif kind == "compressed":
            data = _compressed_png(big, big)
        elif kind == "garbage":
            data = rng.randbytes(rng.randint(1, 4096))
        name = f"hostile-{i:04d}-{kind}.{ext}"
        (out / name).write_bytes(data)
        kinds[name] = kind
    return kinds


@dataclass
class HostileReport:
    files: int
    recorded: int  # files with a stored row (ok or failed with a reason)
    failed: int
    crashes: int  # runs that raised instead of recording
    max_decode_seconds: float  # the slowest single decode of the corpus (decode_image, one thread)
    reasons: dict[str, int]  # failure category -> count
    peak_rss_mb: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def hostile_images(db: Any, monitor: str, folder: Path, kinds: dict[str, str]) -> HostileReport:
    """Ingest the corpus as one batch (in this process) and time every file's decode alone."""
    import resource

    from sqlalchemy import text

    from t2c_monitor.errors import ImageDecodeError
    from t2c_monitor.images import decode_image, failure_category
    from t2c_monitor.ingest import ingest

    slowest = 0.0
    for name in kinds:
        data = (folder / name).read_bytes()
        started = time.perf_counter()
        with contextlib.suppress(ImageDecodeError):
            decode_image(data, name)
        slowest = max(slowest, time.perf_counter() - started)
    crashes = 0
    try:
        ingest(db, monitor, folder, batch_id=f"hostile-{folder.name}")
    except Exception:  # noqa: BLE001 - counted: a crash is what this scenario looks for
        crashes += 1
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT i.status, i.failure_reason FROM image i JOIN batch b ON b.id = i.batch_id "
                                 "WHERE b.external_id = :b"), {"b": f"hostile-{folder.name}"}).all()
    reasons: dict[str, int] = {}
    for r in rows:
        if r.status == "failed":
            category = failure_category(r.failure_reason)
            reasons[category] = reasons.get(category, 0) + 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return HostileReport(files=len(kinds), recorded=len(rows), failed=sum(reasons.values()), crashes=crashes,
                         max_decode_seconds=round(slowest, 3), reasons=reasons, peak_rss_mb=round(peak, 1))


# ------------------------------------------------------------------------------------------ receivers and secrets

HOOK_ENV = "T2C_FAULTS_HOOK"
FAULTS = ("answers 503", "answers after the timeout", "drops the connection", "is not there", "works")


@dataclass
class DeliveryReport:
    audits: int = 0
    receiver_faults: int = 0  # audits whose first delivery met a fault
    delivered: int = 0  # audits whose alert reached the receiver (at once, by retries, or `t2c alerts retry`)
    lost: int = 0
    repeated: int = 0  # extra deliveries of a message already delivered (same idempotency key)
    repeats_without_timeout: int = 0  # repeats not explained by a receiver that answered too late
    secrets_found: list[str] = field(default_factory=list)  # where the hook's token was found

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def configure_alerts(root: Path, monitor_file: Path, *, timeout_s: float = 1.0) -> Path:
    """The monitor file with a webhook channel whose URL (holding a secret token) comes from ``HOOK_ENV``."""
    import yaml

    document = yaml.safe_load(monitor_file.read_text())
    document["channels"] = {"hook": {"type": "webhook", "url_env": HOOK_ENV, "timeout_s": timeout_s}}
    document["monitors"][0]["alerts"] = {"channels": ["hook"], "quiet_period": "0s", "retries": 1,
                                         "retry_delay": "0.2s"}
    path = root / "monitors-alerts.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def configure_schedules(root: Path, monitor_file: Path, inbox: Path) -> Path:
    """The monitor file with an inbox ingested every 20 s and an audit every minute."""
    import yaml

    document = yaml.safe_load(monitor_file.read_text())
    document["monitors"][0]["schedules"] = {"audit_cron": "* * * * *", "inbox": str(inbox), "ingest_interval": "20s"}
    document["monitors"][0]["audit"] = {"last": 1, "evidently": False}
    path = root / "monitors-scheduled.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def receivers_and_secrets(env: dict[str, str], home: Path, engine: Any, monitor: str, batch: str, token: str, *,
                          audits: int, log: Any = print) -> DeliveryReport:
    """Audit ``batch`` (which must flag) ``audits`` times through `t2c audit` processes (Prefect flows), the
    receiver cycling through ``FAULTS``; then `t2c alerts retry`; then look for ``token`` everywhere the
    home keeps anything (database files, Prefect's database and logs, reports) and in every output."""
    from t2c_monitor.receiver import WebhookReceiver

    report = DeliveryReport()
    outputs: list[str] = []
    with WebhookReceiver(path=f"/hooks/{token}") as receiver:
        receiver.slow_seconds = 2.0
        for i in range(audits):
            fault = FAULTS[i % len(FAULTS)]
            run_env = dict(env, **{HOOK_ENV: receiver.url})
            if fault == "answers 503":
                receiver.fail_next = 1
            elif fault == "answers after the timeout":
                receiver.slow_next = 1
            elif fault == "drops the connection":
                receiver.drop_next = 1
            elif fault == "is not there":
                run_env[HOOK_ENV] = f"http://127.0.0.1:9/hooks/{token}"
            report.receiver_faults += fault != "works"
            done = run_t2c(run_env, "audit", "--monitor", monitor, "--batches", batch, "--json")
            outputs += [done.stdout, done.stderr]
            report.audits += 1
            log(f"  audit {i + 1}/{audits}: the receiver {fault}: exit {done.returncode}")
        retry = run_t2c(dict(env, **{HOOK_ENV: receiver.url}), "alerts", "retry", "--monitor", monitor, "--json")
        outputs += [retry.stdout, retry.stderr]
        keys = [k for k in receiver.keys if k]
        delivered = {b["audit_id"] for b in receiver.bodies}
        report.delivered = len(delivered)
        report.lost = report.audits - len(delivered)
        report.repeated = len(keys) - len(set(keys))
        slow_audits = sum(1 for i in range(audits) if FAULTS[i % len(FAULTS)] == "answers after the timeout")
        report.repeats_without_timeout = max(0, report.repeated - slow_audits)
    places = [p for p in home.rglob("*") if p.is_file()]
    report.secrets_found = [str(p.relative_to(home)) for p in places if token.encode() in _read(p)]
    report.secrets_found += [f"table {t}" for t, rows in every_table(engine).items() if token in rows]
    report.secrets_found += [f"output of command {i}" for i, text in enumerate(outputs) if token in text]
    return report


def every_table(engine: Any) -> dict[str, str]:
    """Every row of every table of the database, as JSON text per table."""
    from sqlalchemy import text

    with engine.connect() as conn:
        tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        return {t: str(conn.execute(text(f'SELECT json_agg(x)::text FROM "{t}" x')).scalar()) for t in tables}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-trials", type=int, default=10)
    parser.add_argument("--images", type=int, default=60, help="images of the batch the kill trials ingest")
    parser.add_argument("--hostile", type=int, default=600, help="malformed files of the hostile corpus")
    parser.add_argument("--audits", type=int, default=10, help="audits whose alerts meet receiver faults")
    parser.add_argument("--outage-after", type=float, default=12.0, help="seconds into an ingest the database stops")
    parser.add_argument("--audit-outage-after", type=float, default=None,
                        help="seconds into an audit the database stops (default: 60%% of a clean audit's time)")
    parser.add_argument("--soak-minutes", type=float, default=10.0, help="how long `t2c serve` soaks (0: skip)")
    parser.add_argument("--soak-every", type=float, default=3.0, help="seconds between files dropped in the inbox")
    args = parser.parse_args()
    from sqlalchemy import create_engine

    from t2c_monitor.settings import reset_settings_cache
    from t2c_monitor.store import open_database
    from t2c_monitor.world.generate import write_images

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="t2c-bench-faults-") as tmp:
        home = Path(tmp) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(T2C_HOME=str(home), T2C_DEVICE="cpu", OMP_NUM_THREADS="1")
        env.pop("T2C_DATABASE_URL", None)
        os.environ.update(T2C_HOME=str(home))
        os.environ.pop("T2C_DATABASE_URL", None)
        reset_settings_cache()
        monitor = quick_world_monitor(Path(tmp), progress=True)
        db = open_database()
        env["T2C_DATABASE_URL"] = db.engine.url.render_as_string(hide_password=False)
        engine = create_engine(env["T2C_DATABASE_URL"])
        source = write_images(Path(tmp) / "batch", args.images, seed=11).parent
        print(f"kill trials: {args.kill_trials} SIGKILLs of `t2c ingest` ({args.images} images)", file=sys.stderr)
        kills = kill_ingest(env, engine, monitor, source, trials=args.kill_trials,
                            log=lambda m: print(m, file=sys.stderr))
        result.update(kill_trials=kills.trials, kill_duplicates=kills.duplicates, kill_lost=kills.lost,
                      kill_completed=kills.completed, kill_orphans=kills.orphans,
                      kill_unfinished_listed=f"{kills.listed_unfinished}/{kills.killed_unfinished}")
        print("database outage: the embedded PostgreSQL stopped during a `t2c ingest`", file=sys.stderr)
        reference = batch_rows(engine, monitor, "clean-run")
        outage = database_outage(env, home / "pgdata", env["T2C_DATABASE_URL"], monitor, source, batch="outage",
                                 chunk=16, reference=reference, stop_after=args.outage_after)
        engine.dispose()  # its connections died with the server
        db.engine.dispose()
        result.update(db_outage_failed_cleanly=outage.failed_cleanly, db_outage_seconds_to_fail=outage.seconds_to_fail,
                      db_outage_message=outage.message, db_outage_whole_chunks=outage.partial_chunks_ok,
                      db_outage_recovered=outage.recovered)
        print(f"hostile images: {args.hostile} malformed files in one batch", file=sys.stderr)
        kinds = hostile_corpus(Path(tmp) / "hostile", args.hostile, seed=1)
        hostile = hostile_images(db, monitor, Path(tmp) / "hostile", kinds)
        result.update(hostile_files=hostile.files, hostile_recorded=hostile.recorded, hostile_crashes=hostile.crashes,
                      max_decode_seconds=hostile.max_decode_seconds, hostile_reasons=hostile.reasons,
                      peak_rss_mb=hostile.peak_rss_mb)
        print(f"receivers: {args.audits} `t2c audit` runs alerting a receiver that fails in turn", file=sys.stderr)
        from t2c_monitor.apply import apply_monitor_file
        from t2c_monitor.audit import build_baseline
        from t2c_monitor.ingest import ingest

        build_baseline(db, monitor, batches=["clean-run"])
        shifted = write_images(Path(tmp) / "night", args.images, seed=12, shift=["night=0.8"])
        ingest(db, monitor, shifted, batch_id="night")
        apply_monitor_file(configure_alerts(Path(tmp), Path(tmp) / "monitors.yaml"), db, device="cpu")
        token = "tok-" + os.urandom(8).hex()
        deliveries = receivers_and_secrets(env, home, engine, monitor, "night", token, audits=args.audits,
                                           log=lambda m: print(m, file=sys.stderr))
        result.update(receiver_faults=deliveries.receiver_faults, deliveries_lost=deliveries.lost,
                      deliveries_repeated=deliveries.repeated,
                      repeats_without_timeout=deliveries.repeats_without_timeout,
                      secrets_found=len(deliveries.secrets_found), secrets_where=deliveries.secrets_found)
        print("database outage: the embedded PostgreSQL stopped during a `t2c audit`", file=sys.stderr)
        engine.dispose()
        db.engine.dispose()
        audited = audit_outage(env, home / "pgdata", env["T2C_DATABASE_URL"], monitor, "night",
                               stop_after=args.audit_outage_after)
        db.engine.dispose()
        result.update(audit_outage_failed_cleanly=audited.failed_cleanly,
                      audit_outage_seconds_to_fail=audited.seconds_to_fail, audit_outage_message=audited.message,
                      audit_outage_half_written=audited.half_written, audit_outage_recovered=audited.recovered)
        result["db_outage_recovered"] = outage.recovered and audited.recovered
        print("killed serve: `t2c serve`'s process group SIGKILLed half-way through an inbox run", file=sys.stderr)
        apply_monitor_file(configure_schedules(Path(tmp), Path(tmp) / "monitors.yaml", home / "inbox"), db,
                           device="cpu")
        burst = sorted(write_images(Path(tmp) / "burst", args.images * 2, seed=14).parent.glob("*.png"))
        served = kill_serve(env, engine, burst, home / "inbox", log=lambda m: print(m, file=sys.stderr))
        result.update(serve_killed_in_flight=served.killed_in_flight, serve_kill_orphans=served.orphans,
                      serve_kill_missed=served.missed, serve_kill_duplicates=served.duplicates,
                      serve_kill_batch_closed=served.interrupted_closed)
        result["kill_trials"] += 1
        result["kill_duplicates"] += served.duplicates
        result["kill_lost"] += served.missed
        if args.soak_minutes > 0:
            n = int(args.soak_minutes * 60 / args.soak_every) + 1
            print(f"soak: `t2c serve` for {args.soak_minutes:g} min, a file every {args.soak_every:g} s into its "
                  "inbox, the database stopped for 10 s half-way", file=sys.stderr)
            pictures = sorted(write_images(Path(tmp) / "soak-images", n, seed=13).parent.glob("*.png"))
            soaked = soak(env, engine, pictures, home / "inbox", minutes=args.soak_minutes, every=args.soak_every,
                          outage=(home / "pgdata", args.soak_minutes * 30), log=lambda m: print(m, file=sys.stderr))
            result.update(soak_minutes=soaked.minutes, soak_files=soaked.files, soak_missed=soaked.missed,
                          soak_duplicates=soaked.duplicates, soak_audits=soaked.audits,
                          soak_audits_failed=soaked.audits_failed, soak_audits_scheduled=soaked.audits_scheduled,
                          soak_audit_states=soaked.audit_states,
                          soak_audits_missed=soaked.audits_scheduled - soaked.audits_completed,
                          soak_outage_survived=soaked.outage_survived,
                          rss_slope_mb_per_hour=soaked.rss_slope_mb_per_hour, soak_rss_mb=soaked.rss_mb,
                          soak_fds_first_last=soaked.fds_first_last, soak_connections_max=soaked.connections_max)
        engine.dispose()
        db.engine.dispose()
        run_t2c(env, "server", "stop")
        run_t2c(env, "db", "stop")
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


def quick_world_monitor(root: Path, *, progress: bool = False) -> str:
    """A monitor of the quick shapes world (built or reused under T2C_MODELS) applied to this home's
    database; returns its name."""
    import yaml

    from t2c_monitor.apply import apply_monitor_file
    from t2c_monitor.store import open_database
    from t2c_monitor.world.build import build_world
    from t2c_monitor.world.drift_check import fit_world_aligner
    from t2c_monitor.world.evaluate import default_bank_path

    world = build_world(seed=0, quick=True, progress=progress)
    aligner = fit_world_aligner(world, root / "aligner", n_fit=1500)
    path = root / "monitors.yaml"
    path.write_text(yaml.safe_dump({"monitors": [{
        "name": "faults", "encoder": world.source_spec, "clip": world.clip_spec, "aligner": str(aligner),
        "bank": str(default_bank_path()), "ingest": {"batch_size": 16, "chunk_size": 16},
        "audit": {"evidently": False}}]}))
    apply_monitor_file(path, open_database(), device="cpu")
    return "faults"


if __name__ == "__main__":
    main()
