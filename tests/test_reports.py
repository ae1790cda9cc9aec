"""Reports people read, opened in a real headless Chromium: the audit report and the digest load every
image with no console error and are not blank; hostile concept names and decoded texts appear as
written and run nothing; a report that cannot be written is recorded on its audit and written by
the next report job (the ``decode_report`` flow)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from browser import chromium, open_page
from conftest import TINY_BANK, apply_tiny
from sqlalchemy import text

from t2c_monitor.audit import audit_window, build_baseline, write_report
from t2c_monitor.errors import ConfigError

pytestmark = pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (.ci/run installs it)")

HOSTILE = ["<script>alert(1)</script>", "cost $5 and $6", "$\\frac{$"]
TINY_NAMES = ["red", "green", "blue", "at night", "a bright picture"]
SAID = "\"'&<>"


@pytest.fixture
def hostile(monitored, tiny_monitor_dir, tmp_path):
    """The tiny monitor whose bank also holds concepts named like an attack and like TeX, with a baseline."""
    bank = tmp_path / "bank.yaml"
    bank.write_text(TINY_BANK + "".join(f"  - name: '{name}'\n    phrasings: ['{name}']\n" for name in HOSTILE))
    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config", bank=str(bank), audit={"evidently": True})
    build_baseline(monitored, "tiny", batches=["ref-1", "ref-2"], reservoir_size=100)
    return monitored


def _check_page(path) -> object:
    visit = open_page(path)
    assert visit.console_errors == [], visit.console_errors
    assert visit.dialogs == [], "a script from the data ran"
    assert visit.images and visit.broken_images == [], visit.broken_images
    assert not visit.blank()
    return visit


def test_audit_report_in_a_browser_shows_hostile_text_as_written(hostile, tmp_path):
    outcome = audit_window(hostile, "tiny", batches=["dark"])
    summary = outcome.summary
    assert summary.flagged, "the dark batch moves some concept"
    words = dataclasses.replace(summary.words, grew=[SAID, *summary.words.grew])
    written = write_report(hostile, dataclasses.replace(outcome, summary=dataclasses.replace(summary, words=words)),
                           tmp_path / "reports")
    visit = _check_page(written.report)
    for name in HOSTILE:
        assert name in visit.text, f"{name!r} is not shown as written"
    assert f"more {SAID}" in visit.text
    html = Path(written.report).read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert visit.title == f"t2c audit {summary.id}: tiny"
    index = open_page(Path(written.report).parent.parent / "index.html")  # every audit of the monitor
    assert index.console_errors == [] and not index.blank() and "report" in index.text
    assert "all audits of tiny" in visit.text
    digest = (tmp_path / "reports" / "tiny" / f"audit-{summary.id}" / "digest.md").read_text()
    assert "\\<script\\>" in digest and SAID.replace("<", "\\<").replace(">", "\\>") in digest


def test_report_job_writes_a_failed_report_and_a_digest_that_opens(prefect_harness, hostile, tmp_path):
    from flows.audit import AuditParams, audit_flow
    from flows.report import ReportParams, decode_report_flow
    from t2c_monitor.settings import get_settings

    reports = get_settings().reports_dir
    reports.parent.mkdir(parents=True, exist_ok=True)
    reports.write_text("not a folder")  # the report cannot be written: the audit keeps why
    first = audit_flow(AuditParams(monitor="tiny", batches=["dark"], alerts=False))
    assert first["report"] is None and first["report_error"]

    reports.unlink()  # the disk is back: the next report job writes it
    result = decode_report_flow(ReportParams(monitor="tiny", period_hours=2, send=False))
    assert first["id"] in result["refreshed"] and result["failures"] == []
    with hostile.engine.connect() as conn:
        row = conn.execute(text("SELECT report_error FROM audit WHERE id = :a"), {"a": first["id"]}).one()
        paths = conn.execute(text("SELECT path FROM report WHERE audit_id = :a"), {"a": first["id"]}).scalars().all()
    assert row.report_error is None and len(paths) == 1
    _check_page(paths[0])

    digest = result["digest"]
    assert [a["id"] for a in digest["audits"]] == [first["id"]] and digest["refreshed"] == [first["id"]]
    visit = open_page(result["html"])
    assert visit.console_errors == [] and not visit.blank() and "dark" in visit.text
    again = decode_report_flow(ReportParams(monitor="tiny", period_hours=2, send=False))
    assert again["refreshed"] == [], "nothing left to refresh"

    # evidently: the audit's run in the monitor's workspace project, drifted where we flagged
    from evidently.ui.workspace import Workspace

    from t2c_monitor.audit import refresh_report
    from t2c_monitor.reports.evidently_run import drifted_in_run, workspace_dir

    refresh_report(hostile, "tiny", first["id"], reports)  # written again: still one run for the audit
    workspace = Workspace.create(str(workspace_dir()))
    (project,) = workspace.search_project("tiny")
    (run_id,) = workspace.list_runs(project.id)
    assert sorted(drifted_in_run(workspace_dir(), str(project.id), str(run_id))) == \
        sorted(f["name"] for f in first["flagged"])
    assert (Path(paths[0]).parent / "evidently.html").stat().st_size > 10_000


def test_dataset_report_in_a_browser_by_label(hostile, tmp_path):
    """A labelled batch (a manifest with a label column) and the dark day: presence against the
    baseline, concepts by class, images most unlike the baseline; every image loads."""
    import json

    from conftest import write_images

    from t2c_monitor.ingest import ingest
    from t2c_monitor.reports.dataset import dataset_report, write_dataset_report

    folder = tmp_path / "labelled"
    paths = write_images(folder, 12, seed=9)
    manifest = folder / "batch.jsonl"
    manifest.write_text("".join(json.dumps({"uri": p.name, "label": "even" if i % 2 == 0 else "odd"}) + "\n"
                                for i, p in enumerate(paths)))
    ingest(hostile, "tiny", manifest, batch_id="labelled")
    report = dataset_report(hostile, "tiny", batches=["labelled", "dark"])
    assert report.n_images == 12 + 60 and sorted(report.batches) == ["dark", "labelled"]
    assert sorted(report.by_label) == ["even", "odd"] and all(len(v) == 3 for v in report.by_label.values())
    assert {p.name for p in report.most} | {p.name for p in report.least} <= set(TINY_NAMES + HOSTILE)
    assert len(report.unlike) == 6 and report.words is not None
    visit = _check_page(write_dataset_report(tmp_path / "reports", report).html)
    assert "Concepts that go with each class" in visit.text and "<script>alert(1)</script>" in visit.text
    with pytest.raises(ConfigError, match="no-such-batch"):
        dataset_report(hostile, "tiny", batches=["no-such-batch"])


def test_digest_goes_to_the_channels_that_take_it(monitored, tiny_monitor_dir, tmp_path):
    import json

    from t2c_monitor.reports.job import run_report_job

    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config", alerts={"channels": ["log"], "digest": True},
               channels={"log": {"type": "file", "path": "alerts.jsonl"}})
    build_baseline(monitored, "tiny", batches=["ref-1", "ref-2"], reservoir_size=100)
    audit = audit_window(monitored, "tiny", batches=["dark"]).summary
    result = run_report_job(monitored, "tiny", tmp_path / "reports")
    assert result.refreshed == [audit.id] and result.sent == ["log: sent"]
    (line,) = (tmp_path / "config" / "alerts.jsonl").read_text().splitlines()
    sent = json.loads(line)
    assert sent["subject"].startswith("[t2c] tiny: 1 audit since") and f"audit {audit.id} (dark)" in sent["text"]
    assert [a["id"] for a in sent["digest"]["audits"]] == [audit.id]


def test_search_contact_sheet_in_a_browser(hostile, tmp_path):
    """`t2c search --html`: the steps of a concept-logic query and every hit's thumbnail, hostile concept
    names shown as written; a text search's sheet too."""
    import json

    from typer.testing import CliRunner

    from t2c_monitor.cli import app

    sheet = tmp_path / "sheets" / "logic.html"
    out = CliRunner().invoke(app, ["search", "--monitor", "tiny", "at night:+1", "<script>alert(1)</script>:-0",
                                   "--top", "12", "--html", str(sheet), "--json"])
    assert out.exit_code == 0, out.output
    found = json.loads(out.stdout)
    assert found["hits"] and len(found["counts"]) == 3
    visit = _check_page(sheet)
    assert len(visit.images) == len(found["hits"]) and "Images left after each constraint" in visit.text
    assert "<script>alert(1)</script>:-0" in visit.text
    (tmp_path / "sheet.png").write_bytes(visit.screenshot)
    out = CliRunner().invoke(app, ["search", "--monitor", "tiny", "--text", "a dark picture", "--top", "6",
                                   "--html", str(tmp_path / "sheets")])
    assert out.exit_code == 0, out.output
    (page,) = [p for p in (tmp_path / "sheets").glob("search-*.html")]
    assert len(_check_page(page).images) == 6
