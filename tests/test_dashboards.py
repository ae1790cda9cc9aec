"""The Grafana dashboards: every panel's SQL, expanded the way Grafana expands its macros, runs against a
database that a small end-to-end run filled (batches with a failed image, a baseline, audits that flag a
drift and decode it, alerts sent, held back and failed), and returns rows of the shape the panel expects.
The JSON files are what ``dashboards/build.py`` writes, and every index a panel names exists."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import apply_tiny
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboards"))
import build  # noqa: E402

PANELS = [(d, p) for d in build.DASHBOARDS for p in d.panels]


def grafana_to_sql(sql: str, *, monitor: str, concept: str, since: datetime, until: datetime,
                   interval_s: int = 60) -> str:
    """Expand the macros and variables our panels use into the SQL Grafana's PostgreSQL data source sends
    (https://grafana.com/docs/grafana/latest/datasources/postgres/#macros)."""
    sql = re.sub(r"\$__timeGroupAlias\(([\w.]+),\s*\$__interval\)",
                 lambda m: f"floor(extract(epoch from {m.group(1)})/{interval_s})*{interval_s} AS \"time\"", sql)
    sql = re.sub(r"\$__timeFilter\(([\w.]+)\)",
                 lambda m: f"{m.group(1)} BETWEEN '{since.isoformat()}' AND '{until.isoformat()}'", sql)
    sql = sql.replace("$__interval_ms", str(interval_s * 1000))
    return sql.replace("$monitor", f"'{monitor}'").replace("$concept", concept.replace("'", "''"))


def test_the_dashboard_files_are_what_build_writes():
    files = {p.name: p.read_text() for p in (ROOT / "dashboards").glob("*.json")}
    assert files == {f"{d.uid}.json": build.render(d) for d in build.DASHBOARDS}, \
        "dashboards/*.json are stale: run `python dashboards/build.py`"
    titles = {d.title for d in build.DASHBOARDS}
    assert {"t2c-monitor: drift overview", "t2c-monitor: ingest health", "t2c-monitor: alerts",
            "t2c-monitor: concept explorer"} <= titles
    provisioning = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/t2c.yaml").read_text())
    mounted = (ROOT / "docker-compose.yml").read_text()
    assert provisioning["providers"][0]["options"]["path"] in mounted, "the compose file mounts the dashboards"


@pytest.fixture
def filled(monitored, tiny_monitor_dir, tmp_path, monkeypatch):
    """The monitored tiny monitor after a day of work: a batch with a corrupt image, a baseline, an audit of
    the dark batch alerted to a live receiver and a dead one (sent and failed), and a second audit of the
    same drift (held back by the quiet period)."""
    from conftest import write_images

    from t2c_monitor.alerts import alert_audit
    from t2c_monitor.audit import build_baseline, run_audit
    from t2c_monitor.ingest import ingest
    from t2c_monitor.receiver import WebhookReceiver

    db = monitored
    folder = write_images(tmp_path / "with-corrupt", 24, seed=9)[0].parent
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ingest(db, "tiny", folder, batch_id="with-corrupt")
    build_baseline(db, "tiny", batches=["ref-1", "ref-2"], reservoir_size=200)
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("T2C_LIVE_HOOK", receiver.url)
        monkeypatch.setenv("T2C_DEAD_HOOK", "http://127.0.0.1:9/hook")  # the discard port: refused
        apply_tiny(db, tiny_monitor_dir, tmp_path / "config",
                   alerts={"channels": ["live", "dead"], "retries": 1, "retry_delay": "0s"},
                   channels={"live": {"type": "webhook", "url_env": "T2C_LIVE_HOOK", "timeout_s": 5},
                             "dead": {"type": "webhook", "url_env": "T2C_DEAD_HOOK", "timeout_s": 1}})
        for _ in range(2):
            summary = run_audit(db, "tiny", batches=["dark"], report_dir=tmp_path / "reports")
            assert summary.flagged, "the dark batch must flag for the drift panels to have rows"
            alert_audit(db, summary, sleep=lambda _: None)
    with db.engine.connect() as conn:
        statuses = set(conn.execute(text("SELECT status FROM alert")).scalars())
        concept = conn.execute(text(
            "SELECT c.name FROM audit_result r JOIN concept c ON c.id = r.concept_id "
            "WHERE r.flagged ORDER BY r.rank LIMIT 1")).scalar_one()
    assert {"sent", "suppressed", "failed"} <= statuses, statuses
    return db, concept


def test_every_panel_returns_rows_of_its_shape_after_an_end_to_end_run(filled):
    db, concept = filled
    now = datetime.now(UTC)
    empty = []
    with db.engine.connect() as conn:
        for variable in {v.name: v for d in build.DASHBOARDS for v in d.variables}.values():
            expanded = grafana_to_sql(variable.query, monitor="tiny", concept=concept, since=now, until=now)
            values = conn.execute(text(expanded)).scalars().all()
            assert values and ("tiny" in values or concept in values), (variable.name, values)
        for dashboard, panel in PANELS:
            expanded = grafana_to_sql(panel.sql, monitor="tiny", concept=concept, since=now - timedelta(hours=1),
                                      until=now + timedelta(minutes=1))
            assert "$" not in expanded, f"unexpanded macro in {dashboard.uid} / {panel.title}"
            result = conn.execute(text(expanded))
            assert tuple(result.keys()) == panel.columns, (dashboard.uid, panel.title)
            rows = result.all()
            if not rows:
                empty.append(f"{dashboard.uid} / {panel.title}")
            if panel.kind == "timeseries":
                assert all(r[0] is not None for r in rows), f"{panel.title}: a row without its time"
    assert not empty, f"panels without rows after an end-to-end run: {empty}"


def test_panel_values_agree_with_the_run(filled):
    """Spot checks that the panels say what happened, not only that they return rows."""
    db, concept = filled
    now = datetime.now(UTC)

    def run(title: str) -> list:
        panel = next(p for _, p in PANELS if p.title == title)
        sql = grafana_to_sql(panel.sql, monitor="tiny", concept=concept, since=now - timedelta(hours=1),
                             until=now + timedelta(minutes=1))
        with db.engine.connect() as conn:
            return conn.execute(text(sql)).all()

    reasons = dict(run("Why images failed"))
    assert sum(reasons.values()) == 1, reasons  # the one corrupt file
    outcomes = dict(run("Outcomes in the range"))
    assert sum(outcomes.values()) == 4 and outcomes["sent"] == 1 and outcomes["failed"] >= 1, outcomes
    assert outcomes["suppressed"] >= 1, outcomes  # the second audit's drift was alerted an instant before
    audits = run("Audits")
    assert len(audits) == 2 and all(a.status == "done" and a.flagged > 0 for a in audits)
    assert all(a.roots for a in audits), "each audit names its root causes"
    batches = {r.batch: r for r in run("Batches")}
    assert batches["with-corrupt"].ok == 24 and batches["with-corrupt"].failed == 1
    histogram = run("Score histogram: baseline against the range")
    assert len(histogram) == 20
    assert sum(r.baseline_percent for r in histogram) == pytest.approx(100, abs=0.01)
    assert sum(r.range_percent for r in histogram) == pytest.approx(100, abs=0.01)
    quantiles = {r.sample: r for r in run("Baseline and range")}
    with db.engine.connect() as conn:
        ok = conn.execute(text("SELECT count(*) FROM image WHERE status = 'ok'")).scalar_one()
    assert quantiles["baseline"].images == 120 and quantiles["range"].images == ok  # two batches; all of them
    assert quantiles["baseline"].p10 <= quantiles["baseline"].median <= quantiles["baseline"].p90


def test_every_index_a_panel_names_exists(engine):
    named = {m for _, p in PANELS for m in re.findall(r"\bix_\w+", p.description)}
    named |= set(re.findall(r"\bix_\w+", build.__doc__))
    with engine.connect() as conn:
        present = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")).scalars())
    assert named and named <= present, named - present


def test_dashboards_are_valid_grafana_json():
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (path.name, panel["title"])
            assert panel["targets"][0]["datasource"]["uid"] == "t2c-postgres"
