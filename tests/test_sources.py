"""Contracts of batch sources: folders, globs, URI lists, fsspec prefixes and manifests become
items in a deterministic order; bad entries become failed items; empty or malformed sources
raise ConfigError; the content batch id is stable and follows the content."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import pytest
from PIL import Image

from t2c_monitor.errors import ConfigError, ImageDecodeError
from t2c_monitor.images import DecodedImage, FailedImage, load_image
from t2c_monitor.sources import SourceItem, content_batch_id, read_bytes, resolve_source


def _png(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)
    return path


def _png_bytes(colour: tuple[int, int, int]) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "batch"
    for rel in ["b.png", "a/z.jpg", "a/deeper/y.webp", "c.PNG", "a/.hidden.png", ".cache/x.png"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(path, {".jpg": "JPEG", ".webp": "WEBP"}.get(path.suffix, "PNG"))
    (root / "notes.txt").write_text("not an image")
    (root / "manifest.jsonl").write_text("{}\n")
    return root


@pytest.fixture
def memory_root() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = f"/t2c-test-{uuid.uuid4().hex[:8]}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


# ----------------------------------------------------------------------------- listing


def test_folder_is_listed_recursively_sorted_images_only(folder: Path) -> None:
    items = resolve_source(folder)
    assert [i.uri for i in items] == [
        str(folder / "a/deeper/y.webp"), str(folder / "a/z.jpg"), str(folder / "b.png"), str(folder / "c.PNG")
    ]
    assert all(i.error is None and i.meta == {} and i.captured_at is None for i in items)
    flat = resolve_source(str(folder), recursive=False)
    assert [i.uri for i in flat] == [str(folder / "b.png"), str(folder / "c.PNG")]
    assert resolve_source(folder) == items  # deterministic


def test_local_uris_are_absolute_paths(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)
    assert [i.uri for i in resolve_source("a/z.jpg")] == [str(folder / "a/z.jpg")]
    assert [i.uri for i in resolve_source(f"file://{folder}/b.png")] == [str(folder / "b.png")]
    assert [i.uri for i in resolve_source(["b.png", f"file://{folder}/c.PNG"])] == [
        str(folder / "b.png"), str(folder / "c.PNG")
    ]


def test_glob_with_double_star(folder: Path) -> None:
    assert [i.uri for i in resolve_source(f"{folder}/**/*.png")] == [str(folder / "b.png")]
    assert [i.uri for i in resolve_source(str(folder / "*.[Pp][Nn][Gg]"))] == [
        str(folder / "b.png"), str(folder / "c.PNG")
    ]
    # a glob takes what it names, whatever the extension
    assert [i.uri for i in resolve_source(str(folder / "*.txt"))] == [str(folder / "notes.txt")]


def test_uri_list_keeps_order_and_defers_missing_files(folder: Path) -> None:
    items = resolve_source([str(folder / "c.PNG"), str(folder / "gone.png"), "foo://bucket/x.png"])
    assert [i.uri for i in items] == [str(folder / "c.PNG"), str(folder / "gone.png"), "foo://bucket/x.png"]
    assert items[0].error is None and items[1].error is None
    assert items[2].error is not None and items[2].error.startswith("unknown protocol: 'foo'")
    results = [load_image(i) for i in items]
    assert isinstance(results[0], DecodedImage)
    assert isinstance(results[1], FailedImage) and results[1].reason.startswith("unreadable: no such file")


def test_memory_filesystem_through_fsspec(memory_root: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_root}/day1/b.png", _png_bytes((0, 255, 0)))
    fs.pipe(f"{memory_root}/day1/sub/a.png", _png_bytes((255, 0, 0)))
    fs.pipe(f"{memory_root}/day1/.tmp/c.png", _png_bytes((0, 0, 255)))
    fs.pipe(f"{memory_root}/day1/readme.md", b"hello")
    items = resolve_source(f"memory://{memory_root}/day1")
    assert [i.uri for i in items] == [f"memory://{memory_root}/day1/b.png", f"memory://{memory_root}/day1/sub/a.png"]
    decoded = [load_image(i) for i in items]
    assert [d.image.getpixel((0, 0)) for d in decoded if isinstance(d, DecodedImage)] == [(0, 255, 0), (255, 0, 0)]
    globbed = resolve_source(f"memory://{memory_root}/day1/*.png")
    assert [i.uri for i in globbed] == [f"memory://{memory_root}/day1/b.png"]
    failed = load_image(SourceItem(uri=f"memory://{memory_root}/day1/missing.png"))
    assert isinstance(failed, FailedImage) and failed.reason.startswith("unreadable: no such file")


def test_memory_manifest_resolves_relative_uris(memory_root: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_root}/imgs/a.png", _png_bytes((1, 2, 3)))
    fs.pipe(f"{memory_root}/m.jsonl", b'{"uri": "imgs/a.png", "label": "cat"}\n')
    [item] = resolve_source(f"memory://{memory_root}/m.jsonl")
    assert item.uri == f"memory://{memory_root}/imgs/a.png" and item.meta == {"label": "cat"}
    assert isinstance(load_image(item), DecodedImage)


# ----------------------------------------------------------------------------- manifests


def test_jsonl_manifest_with_metadata_times_and_missing_uri(tmp_path: Path) -> None:
    _png(tmp_path / "imgs/a.png")
    other = _png(tmp_path / "elsewhere/b.png")
    rows = [
        {"uri": "imgs/a.png", "captured_at": "2024-05-01T12:30:00Z", "model_pred": "cat", "score": 0.9},
        {"path": str(other), "capture_time": "2024-05-01T14:30:00", "source": "cam-2"},
        {"label": "dog"},
        {"file": "imgs/a.png", "captured_at": "yesterday"},
    ]
    text = json.dumps(rows[0]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[1:]) + "\n"
    (tmp_path / "batch.jsonl").write_text(text)
    items = resolve_source(tmp_path / "batch.jsonl")
    assert len(items) == 4
    a, b, missing, bad_time = items
    assert a.uri == str(tmp_path / "imgs/a.png") and a.error is None
    assert a.meta == {"captured_at": "2024-05-01T12:30:00Z", "model_pred": "cat", "score": 0.9}
    assert a.captured_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert b.uri == str(other) and b.meta["source"] == "cam-2"
    assert b.captured_at == datetime(2024, 5, 1, 14, 30, tzinfo=UTC)  # naive means UTC
    assert missing.error is not None and "manifest row 4 has no uri" in missing.error  # line 4: blank line 2
    assert missing.error.startswith("missing uri: ") and missing.meta == {"label": "dog"}
    assert bad_time.error is not None and bad_time.error.startswith("bad metadata: captured_at='yesterday'")
    assert isinstance(load_image(a), DecodedImage) and isinstance(load_image(missing), FailedImage)


def test_csv_manifest_with_metadata(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "sub/b.png")
    (tmp_path / "m.csv").write_text(
        "path,captured_at,label,note\n"
        "a.png,2024-06-01T08:00:00+02:00,cat,\"hello, world\"\n"
        ",2024-06-01T09:00:00Z,dog,\n"
        "sub/b.png,,bird,x\n"
    )
    a, missing, b = resolve_source(tmp_path / "m.csv")
    assert a.uri == str(tmp_path / "a.png") and a.meta["label"] == "cat" and a.meta["note"] == "hello, world"
    assert a.captured_at == datetime(2024, 6, 1, 6, 0, tzinfo=UTC)
    assert missing.error is not None and "manifest row 3 has no uri" in missing.error
    assert b.uri == str(tmp_path / "sub/b.png") and b.captured_at is None and b.error is None


def test_malformed_manifests_name_file_and_line(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"uri": "a.png"}\n{"uri": oops}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl line 2: not valid JSON"):
        resolve_source(bad_json)
    not_object = tmp_path / "list.jsonl"
    not_object.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match=r"list\.jsonl line 1: expected a JSON object"):
        resolve_source(not_object)
    wide = tmp_path / "wide.csv"
    wide.write_text("uri,label\na.png,cat\nb.png,dog,extra\n")
    with pytest.raises(ConfigError, match=r"wide\.csv line 3: more fields"):
        resolve_source(wide)
    no_uri = tmp_path / "nouri.csv"
    no_uri.write_text("name,label\na.png,cat\n")
    with pytest.raises(ConfigError, match=r"nouri\.csv line 1: .*no uri column"):
        resolve_source(no_uri)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage\xff")
    with pytest.raises(ConfigError, match=r"bin\.csv is not UTF-8"):
        resolve_source(binary)
    excel = tmp_path / "excel.csv"  # what spreadsheet programs write as "Unicode text": UTF-16 with its BOM
    excel.write_bytes("uri,label\na.png,chat\u00e9\n".encode("utf-16"))
    assert [i.meta for i in resolve_source(excel)] == [{"label": "chat\u00e9"}]


# ----------------------------------------------------------------------------- errors


def test_empty_or_missing_sources_raise_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme.txt").write_text("no images here")
    with pytest.raises(ConfigError, match=r"no images found in .*empty .*\.png"):
        resolve_source(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no images found"):
        resolve_source(f"{tmp_path}/**/*.png")
    with pytest.raises(ConfigError, match="no images found"):
        resolve_source([])
    (tmp_path / "blank.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="no images found"):
        resolve_source(tmp_path / "blank.jsonl")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_source(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_source("memory://t2c-no-such-bucket/prefix")
    with pytest.raises(ValueError, match="source"):
        resolve_source("  ")


def test_unknown_protocol(tmp_path: Path) -> None:
    [item] = resolve_source("foo://bucket/x.png")
    assert item.error is not None and item.error.startswith("unknown protocol: 'foo'")
    with pytest.raises(ConfigError, match="cannot list source foo://bucket/prefix"):
        resolve_source("foo://bucket/prefix")
    with pytest.raises(ImageDecodeError, match="^unknown protocol: 'foo'.*install"):
        read_bytes("foo://bucket/x.png")


def test_read_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 50)
    assert read_bytes(str(path)) == b"x" * 50 and read_bytes(f"file://{path}") == b"x" * 50
    with pytest.raises(ImageDecodeError, match="^too large: file is 50 bytes, over the limit of 49 bytes"):
        read_bytes(str(path), max_bytes=49)
    with pytest.raises(ImageDecodeError, match="^unreadable: no such file"):
        read_bytes(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="max_bytes"):
        read_bytes(str(path), max_bytes=0)


# ----------------------------------------------------------------------------- batch id


def test_content_batch_id_is_stable_and_follows_content(folder: Path) -> None:
    items = resolve_source(folder)
    first = content_batch_id(items)
    assert first == content_batch_id(resolve_source(folder)) == content_batch_id(list(reversed(items)))
    assert len(first) == 64 and int(first, 16) >= 0

    target = folder / "b.png"
    stat = target.stat()
    Image.new("RGB", (4, 4), (255, 255, 255)).save(target)  # same name, new content
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = content_batch_id(resolve_source(folder))
    assert changed != first

    _png(folder / "new.png")
    assert content_batch_id(resolve_source(folder)) not in (first, changed)
    assert content_batch_id(items[:2]) != content_batch_id(items)
    with pytest.raises(ValueError, match="items"):
        content_batch_id([])


def test_content_batch_id_counts_metadata_and_missing_files(tmp_path: Path, memory_root: str) -> None:
    _png(tmp_path / "a.png")
    plain = SourceItem(uri=str(tmp_path / "a.png"))
    labelled = SourceItem(uri=str(tmp_path / "a.png"), meta={"label": "cat"})
    assert content_batch_id([plain]) != content_batch_id([labelled])
    ghost = SourceItem(uri=str(tmp_path / "ghost.png"))
    assert content_batch_id([plain, ghost]) == content_batch_id([ghost, plain])
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_root}/x.png", b"one")
    remote = resolve_source(f"memory://{memory_root}/x.png")
    before = content_batch_id(remote)
    assert content_batch_id(remote) == before
    fs.pipe(f"{memory_root}/x.png", b"three")
    assert content_batch_id(remote) != before
