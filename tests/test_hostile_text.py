"""Hostile text and config: concept texts and batch ids with quotes, semicolons, NUL bytes, RTL marks, emoji
and 10,000 characters; monitor files with wrong types, unknown keys, missing files and cron typos. Each is
stored and shown as written, or refused with a message that names the key and says what to do; nothing
is stored half-way."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_BANK, apply_tiny, write_images
from sqlalchemy import text

from t2c_monitor.errors import ConfigError, T2CError

QUOTED = "he said \"hi\"; DROP TABLE concept; -- it's"
RTL = "\u202eevil\u202c name"
EMOJI = "a cat 🐱 on a mat"
LONG = "x" * 10_000
NUL = "bad\x00name"


def _tables(db) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("concept_bank", "concept", "batch", "image", "monitor")}


def test_concept_texts_are_stored_as_written_or_refused_by_name(applied_monitor, tiny_monitor_dir, tmp_path):
    db = applied_monitor
    bank = tmp_path / "bank.yaml"
    lines = [f"  - {json.dumps(name, ensure_ascii=False)}\n" for name in (QUOTED, RTL, EMOJI)]
    bank.write_text(TINY_BANK + "".join(lines))
    apply_tiny(db, tiny_monitor_dir, tmp_path / "ok", bank=str(bank))
    with db.engine.connect() as conn:
        names = set(conn.execute(text("SELECT name FROM concept")).scalars())
    assert {QUOTED, RTL, EMOJI} <= names

    before = _tables(db)
    for hostile, says in ((NUL, "NUL"), (LONG, "500 characters")):
        bad = tmp_path / f"bad-{len(hostile)}.yaml"
        bad.write_text(TINY_BANK + f"  - {json.dumps(hostile, ensure_ascii=False)}\n")
        with pytest.raises(ConfigError, match=says):
            apply_tiny(db, tiny_monitor_dir, tmp_path / f"bad-{len(hostile)}", bank=str(bad))
    assert _tables(db) == before, "a refused bank stores nothing"


def test_batch_ids_are_stored_as_written_or_refused(applied_monitor, tmp_path):
    from t2c_monitor.ingest import ingest

    db = applied_monitor
    write_images(tmp_path / "images", 4)
    for batch in (QUOTED, RTL, EMOJI):
        summary = ingest(db, "tiny", tmp_path / "images", batch_id=batch)
        assert summary.n_ok == 4
    with db.engine.connect() as conn:
        assert {QUOTED, RTL, EMOJI} <= set(conn.execute(text("SELECT external_id FROM batch")).scalars())
    before = _tables(db)
    for batch, says in ((NUL, "NUL"), (LONG, "200 characters"), ("", "empty"), ("   ", "empty")):
        with pytest.raises(ConfigError, match=says):
            ingest(db, "tiny", tmp_path / "images", batch_id=batch)
    assert _tables(db) == before


@pytest.mark.parametrize(("change", "says"), [
    ({"ingest": {"batch_size": "many"}}, "ingest.batch_size"),
    ({"audit": {"alpha": -1}}, "audit.alpha"),
    ({"colour": "blue"}, "colour"),
    ({"schedules": {"audit_cron": "0 25 * * *"}}, "schedules.audit_cron"),
    ({"schedules": {"audit_cron": "every day"}}, "schedules.audit_cron"),
    ({"schedules": {"timezone": "Mars/Olympus"}}, "schedules.timezone"),
    ({"schedules": {"inbox": "/data/inbox"}}, "ingest_interval"),
    ({"aligner": "/no/such/aligner"}, "/no/such/aligner"),
    ({"bank": "/no/such/bank.yaml"}, "/no/such/bank.yaml"),
    ({"cbm": "/no/such/cbm"}, "/no/such/cbm"),
    ({"alerts": {"channels": ["nobody"]}}, "nobody"),
    ({"name": "bad name; DROP"}, "name"),
])
def test_monitor_files_with_mistakes_are_refused_naming_the_key(applied_monitor, tiny_monitor_dir, tmp_path,
                                                                change, says):
    db = applied_monitor
    before = _tables(db)
    with pytest.raises(T2CError, match=says):  # ConfigError, or ModelLoadError for a missing model
        apply_tiny(db, tiny_monitor_dir, tmp_path / "config", **change)
    assert _tables(db) == before


def test_hostile_manifest_rows_fail_alone_and_the_batch_goes_on(applied_monitor, tmp_path):
    """A NUL byte in a manifest value (PostgreSQL's JSON cannot hold one) fails its row with the reason;
    quotes, RTL marks, emoji and long values are kept as written."""
    from t2c_monitor.ingest import ingest

    db = applied_monitor
    paths = write_images(tmp_path / "images", 4)
    rows = [{"uri": paths[0].name, "note": NUL}, {"uri": paths[1].name, "note": QUOTED, "tag": RTL},
            {"uri": paths[2].name, "note": EMOJI, "long": LONG}, {"uri": paths[3].name, NUL: "key"}]
    manifest = tmp_path / "images" / "batch.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = ingest(db, "tiny", manifest, batch_id="hostile-rows")
    assert (summary.n_ok, summary.n_failed) == (2, 2)
    with db.engine.connect() as conn:
        stored = conn.execute(text("SELECT uri, status, failure_reason, meta FROM image ORDER BY uri")).all()
    failed = {r.uri.rsplit("/", 1)[-1]: r.failure_reason for r in stored if r.status == "failed"}
    assert set(failed) == {paths[0].name, paths[3].name}
    assert all(reason.startswith("bad metadata") and "NUL" in reason for reason in failed.values())
    kept = {r.meta.get("note") for r in stored if r.status == "ok"}
    assert kept == {QUOTED, EMOJI} and any(r.meta.get("long") == LONG for r in stored)
