"""Ingest as users rely on it: monitors validated and recorded, batches stored exactly once, bad
images recorded with their reason while the rest of the batch is stored."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_images, write_png
from sqlalchemy import text

from t2c_monitor.errors import ConfigError, SpaceMismatchError
from t2c_monitor.ingest import IngestOptions, ingest, ingest_items, load_runtime, plan_batch
from t2c_monitor.monitor_models import load_models
from t2c_monitor.monitors import load_monitor_file, parse_monitors
from t2c_monitor.sources import resolve_source

# ---- monitor files ------------------------------------------------------------------------------

def test_monitor_file_paths_resolve_against_the_file(tiny_monitor_dir):
    (config,) = load_monitor_file(tiny_monitor_dir / "monitors.yaml")
    assert config.aligner == tiny_monitor_dir / "aligner" and config.bank == tiny_monitor_dir / "bank.yaml"
    assert config.encoder == f"timm:test_vit@{tiny_monitor_dir / 'encoder.safetensors'}"
    assert config.ingest.batch_size == 8


@pytest.mark.parametrize(
    "monitor, message",
    [
        ({"name": "m", "encoder": "timm:x", "clip": "c", "aligner": "a", "bank": "b", "ingest": {"batch_sise": 8}},
         "monitors[0].ingest.batch_sise: unknown key (allowed: batch_size, chunk_size, decode_threads, "
         "store_writers, workers"),
        ({"name": "m", "encoder": "timm:x", "clip": "c", "aligner": "a", "bank": "b", "colour": 1},
         "monitors[0].colour: unknown key (allowed: name, encoder, clip, aligner, bank"),
        ({"name": "m", "clip": "c", "aligner": "a", "bank": "b"}, "monitors[0].encoder: required key is missing"),
        ({"name": "Bad Name", "encoder": "e", "clip": "c", "aligner": "a", "bank": "b"}, "monitors[0].name:"),
        ({"name": "m", "encoder": "e", "clip": "c", "aligner": "a", "bank": "b", "ingest": {"workers": 0}},
         "monitors[0].ingest.workers: Input should be greater than or equal to 1"),
    ],
)
def test_bad_monitor_files_name_the_key_and_the_allowed_values(monitor, message):
    with pytest.raises(ConfigError) as info:
        parse_monitors({"monitors": [monitor]}, where="monitors.yaml")
    assert message in str(info.value) and "monitors.yaml" in str(info.value)


def test_repeated_monitor_names_are_refused():
    m = {"name": "m", "encoder": "e", "clip": "c", "aligner": "a", "bank": "b"}
    with pytest.raises(ConfigError, match="repeated: m"):
        parse_monitors({"monitors": [m, m]})


def test_an_aligner_for_another_encoder_is_refused_before_any_image_is_read(tiny_monitor_dir, tmp_path):
    (config,) = load_monitor_file(tiny_monitor_dir / "monitors.yaml")
    other = config.model_copy(update={"encoder": "timm:test_resnet"})  # another deployed model
    with pytest.raises(SpaceMismatchError, match="source encoder"):
        load_models(other, device="cpu")


# ---- recording monitors ---------------------------------------------------------------------------

def test_apply_is_idempotent_and_a_changed_bank_is_a_new_version(applied_monitor, tiny_monitor_dir, tmp_path):
    from t2c_monitor.store.monitors import get_monitor, list_monitors, record_monitor

    db = applied_monitor
    (config,) = load_monitor_file(tiny_monitor_dir / "monitors.yaml")
    with db.session() as s:
        first = get_monitor(s, "tiny")
        record_monitor(s, load_models(config, device="cpu"))
    with db.session() as s:
        again = get_monitor(s, "tiny")
        assert (again.bank_id, again.aligner_id) == (first.bank_id, first.aligner_id)
        assert s.execute(text("SELECT count(*) FROM concept_bank")).scalar() == 1
    assert first.concept_names == ["red", "green", "blue", "at night", "a bright picture"]
    np.testing.assert_allclose(np.linalg.norm(first.concept_vectors, axis=1), 1.0, atol=1e-5)

    bank = tmp_path / "bank.yaml"
    bank.write_text((tiny_monitor_dir / "bank.yaml").read_text() + "  - yellow\n")
    with db.session() as s:
        record_monitor(s, load_models(config.model_copy(update={"bank": bank}), device="cpu"))
    with db.session() as s:
        changed = get_monitor(s, "tiny")
        assert changed.bank_version == 2 and changed.concept_names[-1] == "yellow"
        assert [m.bank_version for m in list_monitors(s)] == [2]


def test_unknown_monitor_names_the_known_ones(applied_monitor):
    with pytest.raises(ConfigError, match="known monitors: tiny"):
        load_runtime(applied_monitor, "nope", device="cpu")


def test_changed_encoder_weights_are_refused(applied_monitor, tiny_monitor_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    from t2c_monitor.store.monitors import get_monitor

    weights = load_file(str(tiny_monitor_dir / "encoder.safetensors"))
    weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}
    changed = tmp_path / "encoder.safetensors"
    save_file(weights, str(changed))
    with applied_monitor.session() as s:
        s.execute(text("UPDATE monitor SET config = jsonb_set(config, '{encoder}', to_jsonb(CAST(:e AS text)))"),
                  {"e": f"timm:test_vit@{changed}"})
        assert get_monitor(s, "tiny").config.encoder.endswith(str(changed))
    with pytest.raises(SpaceMismatchError, match="run `t2c monitor apply` again"):
        load_runtime(applied_monitor, "tiny", device="cpu")


# ---- ingest ---------------------------------------------------------------------------------------

def _rows(db) -> list:
    with db.engine.connect() as conn:
        return conn.execute(text(
            "SELECT i.uri, i.status, i.failure_reason, i.embedding::text AS v, i.scores, i.meta, i.sha256 "
            "FROM image i ORDER BY i.uri"
        )).all()


def _vec(text_value: str) -> np.ndarray:
    return np.array([float(x) for x in text_value.strip("[]").split(",")], dtype=np.float32)


def test_stored_vectors_equal_the_library_result_and_reruns_add_nothing(applied_monitor, tmp_path):
    db = applied_monitor
    paths = write_images(tmp_path / "day-1", 37, seed=7)
    summary = ingest(db, "tiny", tmp_path / "day-1")
    assert (summary.status, summary.n_images, summary.n_ok, summary.n_failed) == ("stored", 37, 37, 0)
    assert set(summary.timings) >= {"decode", "encode", "align_score", "store", "total"}

    runtime = load_runtime(db, "tiny", device="cpu")
    from PIL import Image

    pixels = torch.stack([runtime.encoder.preprocess(Image.open(p).convert("RGB")) for p in paths])
    vectors, scores = runtime.embed(pixels)
    rows = _rows(db)
    assert [r.uri for r in rows] == [str(p) for p in paths]
    np.testing.assert_allclose(np.stack([_vec(r.v) for r in rows]), vectors, atol=1e-5)
    np.testing.assert_allclose(np.array([r.scores for r in rows]), scores, atol=1e-5)

    again = ingest(db, "tiny", tmp_path / "day-1")
    assert again.id == summary.id and again.external_id == summary.external_id
    assert (again.n_images, again.n_ok) == (37, 37)
    assert len(_rows(db)) == 37


def _bomb_png(path: Path) -> Path:
    """A valid PNG header claiming 100000 x 100000 pixels (no pixel data worth decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_bad_inputs_are_recorded_with_reasons_and_the_batch_goes_on(applied_monitor, tmp_path):
    db = applied_monitor
    folder = tmp_path / "inbox"
    good = write_images(folder, 6, seed=3)
    (folder / "empty.png").write_bytes(b"")
    jpeg = write_png(tmp_path / "src.png", (200, 10, 10), size=64)
    from PIL import Image

    Image.open(jpeg).save(folder / "whole.jpg", quality=95)
    (folder / "truncated.jpg").write_bytes((folder / "whole.jpg").read_bytes()[:300])
    (folder / "notes.jpg").write_text("this is not an image")
    _bomb_png(folder / "bomb.png")
    shutil.copy(good[0], folder / "same-as-first.png")
    manifest = tmp_path / "batch.jsonl"
    rows = [{"uri": str(p), "camera": "cam-1"} for p in sorted(folder.iterdir())]
    rows += [{"uri": str(folder / "missing.png")}, {"uri": "foo://bucket/x.png"}, {"camera": "no uri here"},
             {"uri": str(good[1])}]  # the same URI twice in one manifest
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    summary = ingest(db, "tiny", manifest)
    reasons = {Path(r.uri).name: r.failure_reason for r in _rows(db) if r.status == "failed"}
    assert summary.n_ok == 7  # the six good images and whole.jpg
    assert reasons["empty.png"].startswith("empty file")
    assert reasons["truncated.jpg"].startswith("truncated")
    assert reasons["notes.jpg"].startswith("not an image")
    assert reasons["bomb.png"].startswith("too large")
    assert reasons["missing.png"].startswith("unreadable")
    assert reasons["x.png"].startswith("unknown protocol")
    assert reasons["same-as-first.png"] == f"duplicate: same content as {good[0]}"
    assert any(name.startswith("batch.jsonl#line=") and r.startswith("missing uri") for name, r in reasons.items())
    assert summary.n_failed == len(reasons) == 8 and summary.status == "stored"
    assert summary.failures["duplicate"] == 1 and summary.failures["too large"] == 1
    ok_meta = [r.meta for r in _rows(db) if r.status == "ok"]
    assert all(m.get("camera") == "cam-1" for m in ok_meta)


def test_a_batch_where_every_image_fails_ends_failed_with_reasons(applied_monitor, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    (folder / "b.jpg").write_text("nope")
    summary = ingest(applied_monitor, "tiny", folder)
    assert summary.status == "failed" and summary.n_ok == 0 and summary.n_failed == 2
    assert summary.error == "every image failed: 1 empty file, 1 not an image"


def test_a_run_killed_half_way_is_visible_and_a_rerun_completes_it(applied_monitor, tmp_path):
    db = applied_monitor
    write_images(tmp_path / "day-2", 30, seed=11)
    runtime = load_runtime(db, "tiny", device="cpu")
    items = resolve_source(tmp_path / "day-2")
    plan = plan_batch(db, runtime.record, items, source_uri="day-2", batch_id="day-2")
    # the process stores the first 20 images, then dies before finishing the batch
    ingest_items(db, runtime, plan.batch_id, plan.items[:20], IngestOptions(batch_size=8, chunk_size=16))
    with db.engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM batch WHERE external_id = 'day-2'")).scalar()
    assert status == "embedding"
    assert len(_rows(db)) == 20

    summary = ingest(db, "tiny", tmp_path / "day-2", batch_id="day-2")
    assert (summary.status, summary.n_ok, summary.n_images) == ("stored", 30, 30)
    uris = [r.uri for r in _rows(db)]
    assert len(uris) == len(set(uris)) == 30


def test_memory_filesystem_source(applied_monitor, tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    for p in write_images(tmp_path / "mem", 5, seed=21):
        fs.pipe(f"/inbox-mem/{p.name}", p.read_bytes())
    summary = ingest(applied_monitor, "tiny", "memory:///inbox-mem/")
    assert (summary.n_ok, summary.n_failed) == (5, 0)
    assert all(r.uri.startswith("memory://") for r in _rows(applied_monitor))
