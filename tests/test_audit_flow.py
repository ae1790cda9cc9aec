"""The baseline, audit and inbox flows under real Prefect runs, and the deployments the monitors'
schedules make (applied to a real Prefect API, and written as prefect.yaml)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from html import escape, unescape

import pytest
import yaml
from conftest import apply_tiny, write_images, write_png
from sqlalchemy import text

from t2c_monitor.errors import ConfigError


def test_baseline_and_audit_flows_store_report_and_alert(prefect_harness, monitored, tiny_monitor_dir, tmp_path):
    from flows.audit import AuditParams, BaselineParams, audit_flow, baseline_flow

    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config", audit={"last": 1, "reservoir": 100},
               alerts={"channels": ["log"]}, channels={"log": {"type": "file", "path": "alerts.jsonl"}})
    baseline = baseline_flow(BaselineParams(monitor="tiny", batches=["ref-1", "ref-2"]))
    assert (baseline["n_images"], baseline["n_sampled"]) == (120, 100), "the monitor's reservoir size is used"

    result = audit_flow(AuditParams(monitor="tiny"))  # the monitor's window: its last batch, "dark"
    assert result["batches"] == ["dark"] and result["flagged"]
    assert [a["status"] for a in result["alerts"]] == ["sent"]
    (line,) = (tmp_path / "config" / "alerts.jsonl").read_text().splitlines()
    assert json.loads(line)["audit_id"] == result["id"] and json.loads(line)["report"] == result["report"]

    page = (tmp_path / "t2c-home" / "reports" / "tiny" / f"audit-{result['id']}" / "index.html")
    assert result["report"] == str(page)
    html = page.read_text()
    assert html.count("data:image/png;base64,") >= 3, "KS chart, distributions and example thumbnails"
    headline = unescape(html.split("</h1>")[0])
    assert result["roots"] and f"'{result['roots'][0]}'" in headline, "the headline names the root causes"
    said = [*result["words"]["grew"], *result["words"]["shrank"]]
    assert "<h2>Root causes</h2>" in html and "In words: <b>" in html and escape(said[0]) in html
    assert (page.parent / "digest.md").read_text().startswith("**tiny**: "), "the Markdown digest beside it"
    with monitored.engine.connect() as conn:
        assert conn.execute(text("SELECT path FROM report WHERE audit_id = :a"), {"a": result["id"]}).scalar() == \
            str(page)

    quiet = audit_flow(AuditParams(monitor="tiny", batches=["clean"], alerts=False))
    assert quiet["alerts"] == [] and quiet["batches"] == ["clean"]


def test_audit_flow_on_a_time_window_and_its_refusals(prefect_harness, monitored, tiny_monitor_dir, tmp_path):
    from flows.audit import AuditParams, BaselineParams, audit_flow, baseline_flow

    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config", audit={"window": "1h"})
    with pytest.raises(ConfigError, match="has no baseline yet"):
        audit_flow(AuditParams(monitor="tiny"))
    baseline_flow(BaselineParams(monitor="tiny", batches=["ref-1", "ref-2"]))
    result = audit_flow(AuditParams(monitor="tiny"))  # every batch received in the last hour but the baseline's
    assert result["batches"] == ["clean", "dark"] and result["since"] is not None

    # a new bank makes the baseline stale: the audit is refused, saying how to fix it
    bank = tmp_path / "bank.yaml"
    bank.write_text((tiny_monitor_dir / "bank.yaml").read_text() + "  - a tree\n")
    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config2", bank=str(bank))
    with pytest.raises(ConfigError, match="build a new baseline with `t2c baseline build --monitor tiny"):
        audit_flow(AuditParams(monitor="tiny"))


def test_a_scheduled_audit_with_nothing_new_ends_completed_and_stores_nothing(prefect_harness, monitored,
                                                                              tiny_monitor_dir, tmp_path):
    """What an hourly audit of a daily feed meets 23 times a day: the window it would test is the one the
    last audit tested. And a monitor with nothing ingested beyond its baseline. Neither is a failure: the
    run completes saying why, no audit row (failed or not) is stored, no alert is sent."""
    from flows.audit import AuditParams, BaselineParams, audit_flow, baseline_flow

    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config", audit={"last": 1},
               alerts={"channels": ["log"]}, channels={"log": {"type": "file", "path": "alerts.jsonl"}})
    baseline_flow(BaselineParams(monitor="tiny", batches=["ref-1", "ref-2", "clean", "dark"]))
    state = audit_flow(AuditParams(monitor="tiny", skip_unchanged=True), return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["skipped"].startswith("Nothing to audit for tiny: no batch stored but the baseline's; the newest, "
                                        "dark, was received") and "t2c ingest" in result["skipped"]

    baseline_flow(BaselineParams(monitor="tiny", batches=["ref-1", "ref-2"]))
    first = audit_flow(AuditParams(monitor="tiny", skip_unchanged=True))
    assert first["batches"] == ["dark"] and first["flagged"] and [a["status"] for a in first["alerts"]] == ["sent"]
    again = audit_flow(AuditParams(monitor="tiny", skip_unchanged=True))
    assert again["skipped"].startswith(f"Nothing new to audit for tiny: its window (dark) is what audit {first['id']} "
                                       "tested at ") and again["alerts"] == []
    from t2c_monitor.ingest import ingest

    for i in range(5):  # late files of the same batch: a rerun of its ingest adds them, and the window changed
        write_png(tmp_path / "dark" / f"late-{i}.png", (5, 5, 5), seed=950 + i)
    ingest(monitored, "tiny", tmp_path / "dark", batch_id="dark")
    grown = audit_flow(AuditParams(monitor="tiny", skip_unchanged=True, alerts=False))
    assert (grown["batches"], grown["n_current"]) == (["dark"], 65), "a batch that grew is a new window"
    by_hand = audit_flow(AuditParams(monitor="tiny", alerts=False))  # `t2c audit` without the flag: audits again
    assert by_hand["batches"] == ["dark"] and by_hand["id"] != grown["id"]

    write_images(tmp_path / "evening", 30, seed=7)
    ingest(monitored, "tiny", tmp_path / "evening", batch_id="evening")
    fresh = audit_flow(AuditParams(monitor="tiny", skip_unchanged=True, alerts=False))
    assert fresh["batches"] == ["evening"], "a new batch starts a new audit"
    with monitored.engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM audit GROUP BY status")).all()
    assert dict(rows) == {"done": 4}, "nothing stored for the two runs with nothing new, no failed audit either"
    assert len((tmp_path / "config" / "alerts.jsonl").read_text().splitlines()) == 1


def test_a_monitor_that_stored_nothing_for_too_long_is_alerted_once_per_quiet_period(prefect_harness, monitored,
                                                                                     tiny_monitor_dir, tmp_path):
    """A feed that stopped: the scheduled audit finds nothing new, and the monitor's newest batch is older
    than alerts.no_data_after, so its channels hear of it (with the newest batch and how long ago), once per
    quiet period; a fresh feed says nothing."""
    from flows.audit import AuditParams, BaselineParams, audit_flow, baseline_flow
    from t2c_monitor.alerts import alert_no_data
    from t2c_monitor.store.alerts import list_alerts

    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config", audit={"last": 1},
               alerts={"channels": ["log"], "no_data_after": "1d", "quiet_period": "6h"},
               channels={"log": {"type": "file", "path": "alerts.jsonl"}})
    baseline_flow(BaselineParams(monitor="tiny", batches=["ref-1", "ref-2"]))
    audited = audit_flow(AuditParams(monitor="tiny", skip_unchanged=True))
    assert audited["batches"] == ["dark"] and [a["status"] for a in audited["alerts"]] == ["sent"]
    assert alert_no_data(monitored, "tiny") == [], "the feed is fresh: nothing to say"

    with monitored.engine.begin() as conn:  # two days later, nothing has arrived
        conn.execute(text("UPDATE batch SET received_at = received_at - interval '50 hours'"))
    silent = audit_flow(AuditParams(monitor="tiny", skip_unchanged=True))
    assert silent["skipped"] and [a["status"] for a in silent["alerts"]] == ["sent"]
    line = json.loads((tmp_path / "config" / "alerts.jsonl").read_text().splitlines()[-1])
    assert line["kind"] == "no_data" and line["newest_batch"] == "dark", line
    assert line["subject"] == "[t2c] tiny: no images stored for 2d 2h", line["subject"]
    assert "alerts.no_data_after is 1d" in line["text"] and "t2c batches list --monitor tiny" in line["text"]

    again = audit_flow(AuditParams(monitor="tiny", skip_unchanged=True))
    assert [a["status"] for a in again["alerts"]] == ["suppressed"], "once per quiet period while it lasts"
    with monitored.engine.connect() as conn:
        rows = list_alerts(conn, monitored_id(monitored))
    assert [(r.kind, r.audit_id is None, r.status) for r in rows] == [
        ("no_data", True, "suppressed"), ("no_data", True, "sent"), ("drift", False, "sent")]


def monitored_id(db) -> int:
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT id FROM monitor WHERE name = 'tiny'")).scalar_one()


def test_inbox_flow_ingests_only_new_files(prefect_harness, applied_monitor, tmp_path):
    from flows.ingest import InboxParams, ingest_inbox_flow

    inbox = tmp_path / "inbox"
    write_images(inbox / "morning", 6, seed=1)
    params = InboxParams(source=str(inbox), monitor="tiny", interval_s=3600)
    first = ingest_inbox_flow(params)
    assert first["n_ok"] == 6 and first["external_id"].startswith("inbox-")
    assert ingest_inbox_flow(params)["status"] == "nothing new"

    write_images(inbox / "noon", 4, seed=2)
    second = ingest_inbox_flow(InboxParams(source=str(inbox), monitor="tiny", interval_s=1))  # a new interval
    assert second["n_ok"] == 4 and second["external_id"] != first["external_id"]
    with applied_monitor.engine.connect() as conn:
        counts = conn.execute(text("SELECT count(*), count(DISTINCT uri) FROM image")).one()
    assert tuple(counts) == (10, 10), "every file stored once"


def test_an_interrupted_inbox_run_is_closed_by_the_next_and_one_run_holds_the_inbox_at_a_time(
        prefect_harness, applied_monitor, tmp_path):
    from flows.ingest import InboxParams, ingest_inbox_flow
    from t2c_monitor.ingest import (
        IngestOptions,
        exclusive_inbox,
        inbox_batch_id,
        ingest_items,
        load_runtime,
        plan_batch,
    )
    from t2c_monitor.sources import resolve_source

    db, inbox = applied_monitor, tmp_path / "inbox"
    write_images(inbox / "night", 12, seed=7)
    runtime = load_runtime(db, "tiny", device="cpu")
    old = inbox_batch_id(timedelta(hours=1), now=datetime(2026, 1, 1, tzinfo=UTC))  # an earlier interval's batch
    plan = plan_batch(db, runtime.record, resolve_source(inbox), source_uri=str(inbox), batch_id=old)
    # the run stores 5 images, then is killed (its serve SIGKILLed) before it finishes the batch
    ingest_items(db, runtime, plan.batch_id, plan.items[:5], IngestOptions(batch_size=4, chunk_size=4))

    params = InboxParams(source=str(inbox), monitor="tiny", interval_s=3600)
    with exclusive_inbox(db, runtime.record) as held:  # another run (a second serve, say) holds the inbox
        assert held and ingest_inbox_flow(params) == {"status": "busy"}
    after = ingest_inbox_flow(params)
    assert after["status"] == "stored" and after["n_ok"] == 7, "the files the killed run did not store"
    with db.engine.connect() as conn:
        batches = conn.execute(text("SELECT external_id, status, n_ok FROM batch ORDER BY id")).all()
        counts = conn.execute(text("SELECT count(*), count(DISTINCT uri) FROM image")).one()
    assert [tuple(b) for b in batches] == [(old, "stored", 5), (after["external_id"], "stored", 7)]
    assert tuple(counts) == (12, 12), "every file stored once, none lost"
    assert ingest_inbox_flow(params)["status"] == "nothing new"


def _schedules_config(tmp_path):
    from t2c_monitor.monitors import parse_monitors

    (config,) = parse_monitors({"monitors": [{
        "name": "shapes", "encoder": "timm:resnet18", "clip": "open_clip:ViT-B-32", "aligner": "aligner",
        "bank": "bank.yaml",
        "schedules": {"audit_cron": "15 6 * * 1-5", "report_cron": "0 7 * * *", "timezone": "Europe/Berlin",
                      "inbox": str(tmp_path / "inbox"), "ingest_interval": "10m"}}]}, base=tmp_path)
    return config


def test_deployments_carry_the_configured_cron_and_interval(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.deployments import monitor_deployments

    audit, report, inbox = monitor_deployments(_schedules_config(tmp_path))
    ids = {d.name: d.apply() for d in (audit, report, inbox)}

    async def read():
        async with get_client() as client:
            return {name: await client.read_deployment(i) for name, i in ids.items()}

    import asyncio

    stored = asyncio.run(read())
    cron = stored["audit-shapes"].schedules[0].schedule
    assert (cron.cron, cron.timezone) == ("15 6 * * 1-5", "Europe/Berlin")
    assert stored["audit-shapes"].parameters == {"params": {"monitor": "shapes", "skip_unchanged": True}}
    report_cron = stored["report-shapes"].schedules[0].schedule
    assert (report_cron.cron, stored["report-shapes"].parameters) == ("0 7 * * *", {"params": {"monitor": "shapes"}})
    interval = stored["ingest-shapes"].schedules[0].schedule
    assert interval.interval == timedelta(minutes=10)
    assert stored["ingest-shapes"].parameters["params"] == {"monitor": "shapes", "source": str(tmp_path / "inbox"),
                                                            "interval_s": 600.0}


def test_prefect_yaml_declares_the_same_deployments_for_a_work_pool(tmp_path):
    from flows.deployments import prefect_yaml

    document = prefect_yaml([_schedules_config(tmp_path)], work_pool="gpu-pool")
    names = [(d["name"], d["entrypoint"], d["work_pool"]["name"]) for d in document["deployments"]]
    assert names == [("audit-shapes", "flows.audit.audit_flow", "gpu-pool"),
                     ("report-shapes", "flows.report.decode_report_flow", "gpu-pool"),
                     ("ingest-shapes", "flows.ingest.ingest_inbox_flow", "gpu-pool")]
    assert document["pull"] == [], "module-path entrypoints: a worker needs the package, not a checkout"
    assert document["deployments"][0]["schedules"] == [{"cron": "15 6 * * 1-5", "timezone": "Europe/Berlin"}]


def test_checked_in_prefect_yaml_matches_the_demo_monitor(repo_root, tmp_path):
    """prefect.yaml at the top of the repository is what `t2c deployments prefect-yaml` makes of the
    demo's monitor file, and its entrypoints name real flows."""
    import importlib

    from flows.deployments import prefect_yaml
    from t2c_monitor.demo import demo_monitor_document
    from t2c_monitor.monitors import parse_monitors

    checked_in = yaml.safe_load((repo_root / "prefect.yaml").read_text())
    document = demo_monitor_document(encoder="timm:t2c_world_resnet", clip="open_clip:ViT-B-32", aligner="aligner",
                                     bank="bank.yaml")
    configs = parse_monitors(document, base=tmp_path)
    assert {k: v for k, v in checked_in.items() if k != "prefect-version"} == \
        {k: v for k, v in prefect_yaml(configs).items() if k != "prefect-version"}
    for deployment in checked_in["deployments"]:
        module, name = deployment["entrypoint"].rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name))


def test_serve_refuses_monitors_without_schedules(applied_monitor):
    from flows.deployments import serve_monitors

    with pytest.raises(ConfigError, match="No recorded monitor has schedules"):
        serve_monitors(["tiny"])


def test_t2c_serve_registers_the_monitors_deployments(prefect_harness, applied_monitor, tiny_monitor_dir, tmp_path,
                                                      database_url):
    """`t2c serve` as a real process against the test Prefect API: it creates the monitor's
    scheduled deployments and keeps serving until stopped."""
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    apply_tiny(applied_monitor, tiny_monitor_dir, tmp_path / "config", schedules={"audit_cron": "*/30 * * * *"})
    env = {**os.environ, "T2C_DATABASE_URL": database_url, "T2C_HOME": str(tmp_path / "serve-home"),
           "PREFECT_API_URL": PREFECT_API_URL.value()}
    server = subprocess.Popen([Path(sys.executable).parent / "t2c", "serve"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)

    async def deployment():
        async with get_client() as client:
            try:
                return await client.read_deployment_by_name("audit/audit-tiny")
            except Exception:  # noqa: BLE001 - not there yet
                return None

    try:
        found = None
        deadline = time.monotonic() + 120
        while found is None and time.monotonic() < deadline and server.poll() is None:
            time.sleep(2)
            found = asyncio.run(deployment())
        assert found is not None, server.stdout.read() if server.poll() is not None else "no deployment in 120 s"
        assert found.schedules[0].schedule.cron == "*/30 * * * *"
        assert server.poll() is None, "t2c serve keeps running"
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_an_audit_that_fails_is_stored_as_failed_with_its_error(prefect_harness, monitored):
    """A scheduled audit before any baseline exists: the run fails in Prefect and `t2c audit list`
    shows it failed, saying what to do; the next audit after a baseline is built is done."""
    import pytest

    from flows.audit import AuditParams, audit_flow
    from t2c_monitor.audit import build_baseline
    from t2c_monitor.errors import ConfigError
    from t2c_monitor.store.audits import list_audits
    from t2c_monitor.store.monitors import get_monitor

    with pytest.raises(ConfigError, match="no baseline yet"):
        audit_flow(AuditParams(monitor="tiny", batches=["dark"]))
    with monitored.session() as session:
        monitor_id = get_monitor(session, "tiny").id
    with monitored.engine.connect() as conn:
        (failed,) = list_audits(conn, monitor_id)
    assert failed.status == "failed" and "t2c baseline build" in failed.error and failed.n_flagged == 0

    build_baseline(monitored, "tiny", batches=["ref-1", "ref-2"], reservoir_size=100)
    result = audit_flow(AuditParams(monitor="tiny", batches=["dark"], alerts=False))
    with monitored.engine.connect() as conn:
        latest, earlier = list_audits(conn, monitor_id)
    assert (latest.id, latest.status, latest.batches) == (result["id"], "done", ["dark"]) and earlier == failed


def test_a_report_write_that_keeps_failing_is_retried_then_recorded_on_the_audit(prefect_harness, monitored,
                                                                                 tmp_path, monkeypatch):
    """The report is its own task: its retries after a disk error never run the audit again; when it
    still fails, the audit keeps why, the flow completes (its alerts go out), and nothing half-written
    is left behind."""
    import asyncio

    from sqlalchemy import text

    from flows.audit import AuditParams, audit_flow
    from t2c_monitor.audit import build_baseline
    from t2c_monitor.settings import get_settings

    build_baseline(monitored, "tiny", batches=["ref-1", "ref-2"], reservoir_size=100)
    reports = get_settings().reports_dir
    reports.parent.mkdir(parents=True, exist_ok=True)
    reports.write_text("a file where the reports folder should be")  # every write under it fails (OSError)
    state = audit_flow(AuditParams(monitor="tiny", batches=["dark"], alerts=False), return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["report"] is None and "Error" in result["report_error"] and str(reports) in result["report_error"]

    async def task_runs():
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))

    runs = asyncio.run(task_runs())
    report_run = next(r for r in runs if r.name.startswith("report"))
    window_run = next(r for r in runs if r.name.startswith("audit_window"))
    assert (report_run.run_count, window_run.run_count) == (3, 1), "the report task retried, the audit did not"
    with monitored.engine.connect() as conn:
        audits = conn.execute(text("SELECT status, report_error FROM audit")).all()
        reports_rows = conn.execute(text("SELECT count(*) FROM report")).scalar_one()
    assert [a.status for a in audits] == ["done"] and reports_rows == 0, "the audit is stored once"
    assert audits[0].report_error == result["report_error"]
