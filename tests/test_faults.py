"""The short form of ``bench/faults.py``'s scenarios (the benchmark runs the long form; killed processes and
the database outage are in test_faults_processes.py): a corpus of malformed files of every accepted
format; an image that decodes past the monitor's deadline; receivers that fail behind real audit flow
runs, and the webhook's secret searched everywhere; concurrent ingests and audits; a full and a
read-only report disk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import apply_tiny, write_images
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from t2c_monitor.cli import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from faults import _compressed_png, hostile_corpus, hostile_images  # noqa: E402


def test_a_corpus_of_malformed_files_is_recorded_file_by_file(applied_monitor, tmp_path):
    kinds = hostile_corpus(tmp_path / "hostile", 80, seed=5, big=1500)
    report = hostile_images(applied_monitor, "tiny", tmp_path / "hostile", kinds)
    assert report.crashes == 0 and report.recorded == report.files == 80, report
    assert report.failed >= 40 and {"corrupt", "truncated", "not an image"} <= set(report.reasons), report


def test_an_image_that_decodes_past_the_deadline_is_recorded_and_the_batch_goes_on(applied_monitor,
                                                                                  tiny_monitor_dir, tmp_path):
    from t2c_monitor.ingest import ingest

    db = applied_monitor
    folder = tmp_path / "slow"
    write_images(folder, 6)
    (folder / "huge-zeros.png").write_bytes(_compressed_png(6000, 6000))  # 36 megapixels in a few kB
    apply_tiny(db, tiny_monitor_dir, tmp_path / "config", ingest={"decode_timeout_s": 0.05, "decode_threads": 2,
                                                                  "batch_size": 8})
    summary = ingest(db, "tiny", folder, batch_id="slow")
    assert (summary.n_ok, summary.n_failed) == (6, 1)
    with db.engine.connect() as conn:
        reason = conn.execute(text("SELECT failure_reason FROM image WHERE uri LIKE '%huge-zeros.png'")).scalar_one()
    assert reason.startswith("too slow:") and "decode_timeout_s" in reason


@pytest.fixture(autouse=True)
def _quiet_pillow_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # malformed TIFF tags: Pillow warns, we record
        yield


def test_receiver_faults_deliver_through_flows_and_the_secret_is_nowhere(monitored, tiny_monitor_dir,
                                                                         database_url, tmp_path):
    """Two `t2c audit` flow runs, the receiver answering 503 to the first and too late to the second (every
    fault in-process: test_alerts.py; all of them through flows: the benchmark), then `t2c alerts retry`;
    the webhook's token is in no file of the home (database, Prefect's database and logs, reports), no
    row and no output."""
    from faults import HOOK_ENV, receivers_and_secrets

    from t2c_monitor.audit import build_baseline

    build_baseline(monitored, "tiny", batches=["ref-1", "ref-2"], reservoir_size=200)
    apply_tiny(monitored, tiny_monitor_dir, tmp_path / "config",
               alerts={"channels": ["hook"], "quiet_period": "0s", "retries": 1, "retry_delay": "0.2s"},
               channels={"hook": {"type": "webhook", "url_env": HOOK_ENV, "timeout_s": 1.0}})
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(T2C_HOME=str(home), T2C_DATABASE_URL=database_url, T2C_DEVICE="cpu")
    engine = create_engine(database_url)
    try:
        report = receivers_and_secrets(env, home, engine, "tiny", "dark", "tok-9f8e7d6c5b4a", audits=2,
                                       log=lambda _: None)
    finally:
        engine.dispose()
    assert report.audits == 2 and report.receiver_faults == 2
    assert (report.delivered, report.lost) == (2, 0), report
    assert report.repeats_without_timeout == 0 and report.repeated <= 1, report
    assert report.secrets_found == [], report.secrets_found
    assert any(p.name == "prefect.db" for p in home.rglob("*")), "the Prefect run logs were searched"


def test_two_ingests_of_one_batch_and_two_audits_at_once_all_finish_without_duplicates(monitored, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from t2c_monitor.audit import build_baseline, run_audit
    from t2c_monitor.ingest import ingest

    db = monitored
    source = write_images(tmp_path / "same", 64, seed=8)[0].parent
    with ThreadPoolExecutor(2) as pool:
        ingests = [pool.submit(ingest, db, "tiny", source, batch_id="same") for _ in range(2)]
        summaries = [f.result(timeout=300) for f in ingests]
    assert [s.status for s in summaries] == ["stored", "stored"]
    with db.engine.connect() as conn:
        n, distinct = conn.execute(text("SELECT count(*), count(DISTINCT i.uri) FROM image i JOIN batch b "
                                        "ON b.id = i.batch_id WHERE b.external_id = 'same'")).one()
    assert n == distinct == 64

    build_baseline(db, "tiny", batches=["ref-1", "ref-2"], reservoir_size=200)
    with ThreadPoolExecutor(2) as pool:
        audits = [pool.submit(run_audit, db, "tiny", batches=[b]) for b in ("dark", "same")]
        done = [f.result(timeout=300) for f in audits]
    assert len({a.id for a in done}) == 2
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit WHERE status = 'done'")).scalar_one() == 2


def mount_small_disk(where: Path, size: str = "64k") -> None:
    """A real small file system (tmpfs) mounted at ``where``; skips the test where mounting is not allowed."""
    import subprocess

    where.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small file system needs root (CI and the development machine have it)")


def fill(disk: Path) -> Path:
    """Fill ``disk`` to its last block with one file; returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 1024):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def small_disk(tmp_path):
    """A 64 kB disk mounted where this home keeps its reports."""
    import subprocess

    from t2c_monitor.settings import get_settings

    mount = get_settings().reports_dir
    mount_small_disk(mount)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_then_read_only_report_disk_keeps_the_audits_and_the_report_job_writes_them_later(
        prefect_harness, monitored, small_disk):
    import subprocess

    from flows.audit import AuditParams, audit_flow
    from flows.report import ReportParams, decode_report_flow
    from t2c_monitor.audit import audit_window, build_baseline, record_report_failure, write_report

    build_baseline(monitored, "tiny", batches=["ref-1", "ref-2"], reservoir_size=200)
    filler = fill(small_disk)
    full = audit_flow(AuditParams(monitor="tiny", batches=["dark"], alerts=False))
    assert full["report"] is None and "No space left" in full["report_error"], full["report_error"]
    assert [p for p in small_disk.rglob("*") if p.is_file()] == [filler], "no partial file is left behind"

    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    outcome = audit_window(monitored, "tiny", batches=["dark"])  # the flow's steps, without its retry waits
    with pytest.raises(OSError, match="Read-only") as failed:
        write_report(monitored, outcome, small_disk)
    read_only = record_report_failure(monitored, outcome.summary, failed.value).to_dict()
    assert read_only["report"] is None and "Read-only" in read_only["report_error"]

    subprocess.run(["mount", "-o", "remount,rw,size=16m", str(small_disk)], check=True)  # the disk is fixed
    result = decode_report_flow(ReportParams(monitor="tiny", period_hours=2, send=False))
    assert {full["id"], read_only["id"]} <= set(result["refreshed"]) and result["failures"] == []
    with monitored.engine.connect() as conn:
        errors = conn.execute(text("SELECT report_error FROM audit WHERE id IN (:a, :b)"),
                              {"a": full["id"], "b": read_only["id"]}).scalars().all()
    assert errors == [None, None]
    assert len(list(small_disk.glob("tiny/audit-*/index.html"))) == 2


def test_a_full_or_read_only_models_cache_costs_a_re_embedding_never_the_decode(tiny_clip, tiny_clip_config, tmp_path,
                                                                                caplog):
    """The decoder's vocabulary cache on a real small disk: full, then read-only, then fixed, then corrupt."""
    import subprocess

    from t2c_monitor.decode.vocabulary import build_vocabulary

    cache = tmp_path / "models"
    mount_small_disk(cache, size="16k")
    try:
        terms = [f"word {i}" for i in range(40)]  # 40 x 32 floats: more than the disk holds once it is full
        filler = fill(cache)
        with caplog.at_level("WARNING", logger="t2c_monitor"):
            full = build_vocabulary(tiny_clip, terms, include_bpe_words=False, cache_dir=cache)
        assert full.terms == tuple(terms) and "could not be cached" in caplog.text
        assert [p for p in cache.rglob("*") if p.is_file()] == [filler], "no partial file is left behind"
        bankfile = tmp_path / "bank.txt"  # a command that saves an artifact there says why it cannot
        bankfile.write_text("\n".join(terms) + "\n")
        saved = CliRunner().invoke(app, ["concepts", "encode", str(bankfile), "--clip", f"open_clip:{tiny_clip_config}",
                                         "--out", str(cache / "bank"), "--json"])
        assert saved.exit_code == 1 and "No space left on device" in saved.output, saved.output
        assert "Traceback" not in saved.output and [p for p in cache.rglob("*") if p.is_file()] == [filler]

        filler.unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
        caplog.clear()
        with caplog.at_level("WARNING", logger="t2c_monitor"):
            read_only = build_vocabulary(tiny_clip, terms, include_bpe_words=False, cache_dir=cache)
        assert torch_equal(read_only.vectors, full.vectors) and "Read-only" in caplog.text

        subprocess.run(["mount", "-o", "remount,rw,size=1m", str(cache)], check=True)  # the disk is fixed
        build_vocabulary(tiny_clip, terms, include_bpe_words=False, cache_dir=cache)
        saved = next(cache.rglob("vectors.safetensors"))
        assert sorted(p.name for p in saved.parent.iterdir()) == ["vectors.safetensors", "vocabulary.json"]
        saved.write_bytes(saved.read_bytes()[:100])  # a cache file damaged later: ignored, embedded again
        caplog.clear()
        with caplog.at_level("WARNING", logger="t2c_monitor"):
            again = build_vocabulary(tiny_clip, terms, include_bpe_words=False, cache_dir=cache)
        assert torch_equal(again.vectors, full.vectors) and "ignoring the cached vocabulary" in caplog.text
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.allclose(a, b, atol=1e-6))
