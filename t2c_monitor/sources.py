"""Turn "a source" of production images into a list of items, and items into bytes.

A source is whatever a batch of images arrives as: a local folder, a glob pattern, a list of
URIs, one fsspec URI or prefix (``s3://bucket/day/``, ``memory://...`` in tests, any protocol
whose fsspec implementation is installed), or a manifest file (``.jsonl``/``.ndjson`` or
``.csv``) with one image per row and metadata columns.

Listing is strict and reading is lenient. A source that cannot be listed at all (nothing found,
a manifest that is not JSONL/CSV) raises ``ConfigError``, because there is no batch to store. A
single bad entry (a manifest row without a URI, an unknown protocol, later a missing or corrupt
file) becomes an item whose failure reason ingest records on a failed image row, so one bad
file never stops the batch.

Canonical URIs: local files are absolute POSIX paths without a scheme (``/data/a.png``;
``file://`` URIs are converted to that form); everything else keeps its protocol, as fsspec
writes it (``s3://bucket/a.png``, ``memory:///bucket/a.png``).

Failure reasons start with a stable category word, ``"<category>: <detail>"``, so dashboards
can group them; ``t2c_monitor.images`` lists every category.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec

from t2c_monitor.errors import ConfigError, ImageDecodeError
from t2c_monitor.manifests import MANIFEST_SUFFIXES, items_from_manifest
from t2c_monitor.redaction import mask_url
from t2c_monitor.textfiles import NotARegularFile, file_kind, open_regular
from t2c_monitor.uris import SourceItem, canonical_uri, local_path, make_item, protocol_of, unknown_protocol_reason

__all__ = ["IMAGE_EXTENSIONS", "SourceItem", "canonical_uri", "content_batch_id", "expand_source", "read_bytes",
           "resolve_source"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff"}
)
"""Suffixes (lower case) picked up when a folder or prefix is listed."""

_GLOB_CHARS = frozenset("*?[")


# --------------------------------------------------------------------------- listing


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(relative).parts)


def _is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def _list_local_dir(root: str, recursive: bool) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        found.extend(os.path.join(dirpath, f) for f in filenames
                     if not f.startswith(".") and _is_image_name(f))
    return sorted(found)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _folder_items(folder: str, recursive: bool) -> list[SourceItem]:
    """The images of a local folder; a symlink whose target lies outside the folder is refused (an inbox
    that others write to must not become a way to read any file this process can)."""
    root = os.path.realpath(folder)
    items = []
    for path in _list_local_dir(folder, recursive):
        real = os.path.realpath(path)
        if not _within(real, root):
            items.append(make_item(path, error=f"refused: {path} is a link to {real}, outside the folder {folder}"))
        else:
            items.append(make_item(path))
    return items


def check_allowed_roots(items: Sequence[SourceItem], roots: Sequence[str]) -> list[SourceItem]:
    """``items`` with every one outside ``roots`` (local folders, compared by real path so links do not
    escape; or URI prefixes) marked refused; unchanged when ``roots`` is empty (any source allowed)."""
    if not roots:
        return list(items)
    local_roots = [os.path.realpath(r) for r in roots if local_path(r) is not None and protocol_of(r) in (None, "file")]
    prefixes = [r.rstrip("/") + "/" for r in roots if protocol_of(r) not in (None, "file")]
    out = []
    for item in items:
        if item.error is not None:
            out.append(item)
            continue
        local = local_path(item.uri)
        if local is not None:
            ok = any(_within(os.path.realpath(local), root) for root in local_roots)
        else:
            ok = any(item.uri.startswith(prefix) for prefix in prefixes)
        out.append(item if ok else dataclasses.replace(
            item, error=f"refused: {item.uri} is outside ingest.allowed_roots ({', '.join(roots)})"))
    return out


def _list_remote(fs: Any, path: str, recursive: bool) -> list[str] | None:
    """Image URIs under a remote prefix or glob; a one-element list for a single file."""
    if "*" in path or "[" in path:
        return sorted(fs.unstrip_protocol(p) for p in fs.glob(path) if fs.isfile(p))
    if fs.isdir(path):
        root = path.rstrip("/")
        listed = fs.find(root, maxdepth=None if recursive else 1)
        return sorted(
            fs.unstrip_protocol(p) for p in listed
            if _is_image_name(p) and not _is_hidden(p[len(root):].lstrip("/"))
        )
    if fs.isfile(path):
        return [fs.unstrip_protocol(path)]
    return None


def _resolve_string(source: str, recursive: bool) -> list[SourceItem]:
    protocol = protocol_of(source)
    local = local_path(source)
    suffix = PurePosixPath(source.split("?", 1)[0]).suffix.lower()
    if local is None:
        assert protocol is not None
        bad = unknown_protocol_reason(protocol)
        if bad is not None:
            if _is_image_name(source):
                return [SourceItem(uri=source, meta={}, captured_at=None, error=bad)]
            raise ConfigError(f"cannot list source {source}: {bad.split(': ', 1)[1]}")
        fs, path = fsspec.core.url_to_fs(source)
        if suffix in MANIFEST_SUFFIXES and fs.isfile(path):
            return items_from_manifest(fs.unstrip_protocol(path))
        listed = _list_remote(fs, path, recursive)
        if listed is None:
            raise ConfigError(f"source {source} does not exist: give an existing prefix, file or glob")
        return [make_item(u) for u in listed]
    if any(c in local for c in _GLOB_CHARS) and not os.path.exists(local):
        return [make_item(p) for p in sorted(globlib.glob(local, recursive=True)) if os.path.isfile(p)]
    if os.path.isdir(local):
        return _folder_items(local, recursive)
    if os.path.isfile(local):
        if suffix in MANIFEST_SUFFIXES:
            return items_from_manifest(local)
        return [make_item(local)]
    if os.path.exists(local):  # a FIFO, device or socket: never opened
        raise ConfigError(f"source {source} is a {file_kind(os.stat(local).st_mode)}, not a folder or a file: give "
                          "a folder, file, glob or URI of images")
    raise ConfigError(f"source {source} does not exist: give an existing folder, file, glob or URI")


def resolve_source(source: str | Path | Sequence[str], *, recursive: bool = True) -> list[SourceItem]:
    """The items of a batch, in a deterministic order.

    - a folder: image files (by extension, see ``IMAGE_EXTENSIONS``) below it, sorted by path;
      hidden files and folders (names starting with ``.``) are skipped; ``recursive=False``
      lists only the folder itself;
    - a glob (``/data/*.png``, ``/data/**/*.jpg``): every matching file, whatever its
      extension (the pattern says what is wanted), sorted;
    - a ``.jsonl``/``.ndjson``/``.csv`` manifest: one item per row, in file order; the URI comes
      from column ``uri`` (or ``path``, ``file``), relative paths are resolved against the
      manifest's folder, the other columns become ``meta`` (CSV values stay strings) and
      ``captured_at``/``capture_time`` (ISO 8601 or Unix seconds) becomes ``captured_at``;
      a row without a URI becomes an item with ``error`` set and the URI
      ``<manifest>#line=N``; an unparseable capture time sets ``error`` too;
    - one fsspec URI: a prefix (listed like a folder), a glob, a single file or a manifest;
    - a list of URIs or paths: one item each, in the given order, not checked for existence
      (a missing file fails when read, as a failed image of the batch).

    Raises ``ConfigError`` when the source does not exist, a manifest is malformed, or nothing
    was found.
    """
    if isinstance(source, (str, Path)):
        text = os.fspath(source)
        if not text.strip():
            raise ValueError("source must not be empty: give a folder, glob, manifest or URI")
        items = _resolve_string(text, recursive)
        what = text
    elif isinstance(source, Sequence):
        entries = [os.fspath(s) for s in source]
        if any(not isinstance(e, str) or not e.strip() for e in entries):
            raise ValueError("source list must hold non-empty URI strings")
        items = [make_item(canonical_uri(e)) for e in entries]
        what = f"a list of {len(entries)} URIs"
    else:
        raise ValueError(f"source must be a path, URI, glob or list of URIs, got {type(source).__name__}")
    if not items:
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        raise ConfigError(
            f"no images found in {what} (searched {'recursively ' if recursive else ''}"
            f"for files ending in {exts}, skipping hidden files): check the path or pattern"
        )
    return items


# --------------------------------------------------------------------------- reading


def _size_reason(size: int, max_bytes: int) -> str:
    return f"too large: file is {size} bytes, over the limit of {max_bytes} bytes"


def _io_reason(exc: OSError, uri: str) -> str:
    uri = mask_url(uri)  # a reason is stored and reported: never with a password in it
    if isinstance(exc, NotARegularFile):
        return f"refused: {exc}: {uri}"
    if isinstance(exc, FileNotFoundError):
        return f"unreadable: no such file: {uri}"
    if isinstance(exc, PermissionError):
        return f"unreadable: permission denied: {uri}"
    if isinstance(exc, IsADirectoryError):
        return f"unreadable: is a directory, not a file: {uri}"
    detail = exc.strerror or str(exc) or type(exc).__name__
    return f"unreadable: {detail}: {uri}"


def read_bytes(uri: str, *, max_bytes: int | None = None) -> bytes:
    """The raw bytes at ``uri``; ``ImageDecodeError`` with a categorised reason when they cannot be read.

    ``max_bytes`` refuses larger files before reading them whole. I/O errors (``OSError``,
    including a remote filesystem's missing-object and permission errors) become reasons;
    anything else a remote filesystem raises propagates, so the flow's retries can handle it.
    """
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes}")
    local = local_path(uri)
    try:
        if local is not None:
            with os.fdopen(open_regular(local), "rb") as fh:  # a FIFO or device is refused unopened
                size = os.fstat(fh.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise ImageDecodeError(_size_reason(size, max_bytes))
                data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        else:
            protocol = protocol_of(uri)
            assert protocol is not None
            bad = unknown_protocol_reason(protocol)
            if bad is not None:
                raise ImageDecodeError(bad)
            with fsspec.open(uri, "rb") as fh:
                data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    except OSError as exc:
        raise ImageDecodeError(_io_reason(exc, uri)) from exc
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageDecodeError(_size_reason(len(data), max_bytes))
    return data


def _fingerprint(item: SourceItem) -> list[Any]:
    """What identifies an item's content cheaply: its URI, size and modification time."""
    if item.error is not None:
        return [item.uri, "error", item.error]
    local = local_path(item.uri)
    try:
        if local is not None:
            st = os.stat(local)
            return [item.uri, st.st_size, st.st_mtime_ns]
        fs, path = fsspec.core.url_to_fs(item.uri)
        info = fs.info(path)
    except FileNotFoundError:
        return [item.uri, "missing"]
    version = next((str(info[k]) for k in ("ETag", "etag", "md5Hash", "generation", "mtime",
                                            "LastModified", "last_modified", "created")
                    if info.get(k) is not None), "")
    return [item.uri, info.get("size"), version]


def content_batch_id(items: Sequence[SourceItem]) -> str:
    """A stable hex id of a batch's content, for exactly-once reruns.

    The sha256 of the items sorted by URI, each with its size and modification time (or the
    object store's ETag/generation), its manifest metadata and any item error. It reads no
    image bytes, so it is cheap for large batches; the order of ``items`` does not matter;
    rewriting, adding or removing a file, or editing a manifest row, gives a new id. A missing
    file counts as "missing" rather than failing. Raises ValueError for an empty batch.
    """
    if not items:
        raise ValueError("items must not be empty: a batch id needs at least one item")
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: (i.uri, json.dumps(i.meta, sort_keys=True, default=str))):
        record = _fingerprint(item) + [item.meta, item.captured_at]
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def expand_source(source: str) -> str:
    """``$T2C_HOME`` (the settings' home, even when the variable is unset) and other environment
    variables in a configured source, e.g. a monitor's ``inbox: $DATA/inbox``."""
    import os
    import re

    from t2c_monitor.settings import get_settings

    home = str(get_settings().home)
    return os.path.expandvars(re.sub(r"\$\{?T2C_HOME\}?", lambda _: home, source))
