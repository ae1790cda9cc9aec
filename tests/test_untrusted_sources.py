"""Untrusted sources: a symlink that leads out of an inbox folder and a local file listed by a remote
manifest are refused whatever the settings; a monitor's ``ingest.allowed_roots`` refuses every image
outside its folders and URI prefixes. A refused image is recorded with its reason and never read; the
batch goes on."""

from __future__ import annotations

import json
import os

import fsspec
from conftest import apply_tiny, write_images
from sqlalchemy import text

from t2c_monitor.sources import check_allowed_roots, resolve_source


def _failed(db, batch: str) -> dict[str, str]:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT i.uri, i.failure_reason FROM image i JOIN batch b ON b.id = i.batch_id "
                                 "WHERE b.external_id = :b AND i.status = 'failed'"), {"b": batch}).all()
    return {r.uri: r.failure_reason for r in rows}


def test_a_link_out_of_the_inbox_is_refused_and_the_batch_goes_on(applied_monitor, tmp_path):
    from t2c_monitor.ingest import ingest

    inbox, outside = tmp_path / "inbox", tmp_path / "private"
    write_images(inbox, 3)
    (secret,) = write_images(outside, 1, seed=5)
    os.symlink(secret, inbox / "innocent.png")  # a link to a file outside the inbox
    (inner,) = write_images(inbox / "sub", 1, seed=9)
    os.symlink(inner, inbox / "inner-link.png")  # a link inside it is fine (stored once: same bytes as its target)
    summary = ingest(applied_monitor, "tiny", inbox, batch_id="linked")
    failed = _failed(applied_monitor, "linked")
    refused = {uri: reason for uri, reason in failed.items() if reason.startswith("refused:")}
    link = str(inbox / "innocent.png")
    assert list(refused) == [link] and "outside the folder" in refused[link]
    assert summary.n_ok == 4 and summary.n_failed == len(failed)


def test_a_remote_manifest_may_not_list_local_files():
    fs = fsspec.filesystem("memory")
    rows = [{"uri": "/etc/hostname"}, {"uri": "file:///etc/passwd"}, {"uri": "pics/a.png"}]
    with fs.open("/bucket/batch.jsonl", "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    items = resolve_source("memory://bucket/batch.jsonl")
    assert [i.error is not None and i.error.startswith("refused:") for i in items] == [True, True, False]
    assert items[2].uri.startswith("memory://") and items[2].uri.endswith("/bucket/pics/a.png")


def test_allowed_roots_refuse_what_lies_outside(applied_monitor, tiny_monitor_dir, tmp_path):
    from t2c_monitor.ingest import ingest

    db = applied_monitor
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    inside = write_images(allowed, 2)
    (outside,) = write_images(elsewhere, 1, seed=3)
    os.symlink(outside, allowed / "link.png")  # its real path is outside
    manifest = allowed / "batch.jsonl"
    manifest.write_text("".join(json.dumps({"uri": str(p)}) + "\n" for p in (*inside, outside, allowed / "link.png")))
    apply_tiny(db, tiny_monitor_dir, tmp_path / "config",
               ingest={"allowed_roots": [str(allowed), "s3://bucket/images/"], "batch_size": 8})
    summary = ingest(db, "tiny", manifest, batch_id="rooted")
    assert (summary.n_ok, summary.n_failed) == (2, 2)
    failed = _failed(db, "rooted")
    assert set(failed) == {str(outside), str(allowed / "link.png")}
    assert all("outside ingest.allowed_roots" in r for r in failed.values())

    items = resolve_source(["memory://bucket/images/a.png", "memory://bucket/imagesX/b.png", "memory://other/c.png"])
    checked = check_allowed_roots(items, ["memory://bucket/images"])
    assert [i.error is None or "allowed_roots" not in i.error for i in checked] == [True, False, False]
