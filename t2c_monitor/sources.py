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

import csv
import glob as globlib
import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from fsspec.registry import known_implementations

from t2c_monitor.errors import ConfigError, ImageDecodeError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff"}
)
"""Suffixes (lower case) picked up when a folder or prefix is listed."""

MANIFEST_SUFFIXES: frozenset[str] = frozenset({".jsonl", ".ndjson", ".csv"})
URI_COLUMNS: tuple[str, ...] = ("uri", "path", "file")
"""Manifest columns that may hold the image URI, in order of preference."""
CAPTURED_AT_KEYS: tuple[str, ...] = ("captured_at", "capture_time")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class SourceItem:
    """One image of a batch: where it is, what the manifest said about it, and if it is already bad.

    ``error`` is set when the item itself is unusable (a manifest row without a URI, an unknown
    protocol); ingest records it as a failed image without trying to read anything.
    """

    uri: str
    meta: dict[str, Any] = field(default_factory=dict)
    captured_at: datetime | None = None
    error: str | None = None


# --------------------------------------------------------------------------- protocols


def _protocol(uri: str) -> str | None:
    """The scheme of ``uri`` (``"s3"``), or None for a plain local path."""
    head, sep, _ = uri.partition("://")
    if not sep or not head or "/" in head:
        return None
    return head.lower()


def _unknown_protocol_reason(protocol: str) -> str | None:
    """None when fsspec can open ``protocol``; otherwise a failure reason saying what to install."""
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        return f"unknown protocol: {protocol!r} needs a package that is not installed ({exc})"
    except ValueError:
        hint = known_implementations.get(protocol, {}).get("err")
        fix = hint or "install the fsspec implementation, e.g. s3fs for s3://, gcsfs for gs://"
        return f"unknown protocol: {protocol!r} is not an fsspec filesystem here: {fix}"
    return None


def _local_path(uri: str) -> str | None:
    """The absolute local path ``uri`` names, or None when it is a remote URI."""
    protocol = _protocol(uri)
    if protocol is None:
        return os.path.abspath(os.path.expanduser(uri))
    if protocol in ("file", "local"):
        return os.path.abspath(uri.partition("://")[2] or "/")
    return None


def canonical_uri(uri: str) -> str:
    """The canonical spelling of ``uri``: absolute path for local files, the URI itself otherwise."""
    local = _local_path(uri)
    return local if local is not None else uri


# --------------------------------------------------------------------------- metadata


def _parse_captured_at(meta: dict[str, Any]) -> tuple[datetime | None, str | None]:
    """The capture time from ``meta`` (UTC if naive), or a failure reason when it is unreadable."""
    for key in CAPTURED_AT_KEYS:
        value = meta.get(key)
        if value is None or value == "":
            continue
        try:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, (int, float)):
                return datetime.fromtimestamp(value, tz=UTC), None
            parsed = datetime.fromisoformat(str(value).strip())
        except (TypeError, ValueError, OverflowError, OSError):
            return None, (
                f"bad metadata: {key}={value!r} is not an ISO 8601 time or Unix seconds "
                "(write e.g. 2024-05-01T12:30:00Z)"
            )
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed, None
    return None, None


# --------------------------------------------------------------------------- manifests


def _manifest_rows(text: str, name: str, suffix: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a JSONL or CSV manifest; ConfigError naming the line when malformed."""
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        try:
            header = reader.fieldnames
            if not header:
                raise ConfigError(f"manifest {name} is empty: write a header row with a 'uri' column")
            if not set(URI_COLUMNS) & {h.strip() for h in header if h}:
                raise ConfigError(
                    f"manifest {name} line 1: header {header} has no uri column: "
                    f"name the image column one of {', '.join(URI_COLUMNS)}"
                )
            for row in reader:
                if None in row:
                    raise ConfigError(
                        f"manifest {name} line {reader.line_num}: more fields than the "
                        f"{len(header)} header columns (quote fields that contain commas)"
                    )
                yield reader.line_num, {k.strip(): v for k, v in row.items() if k}
        except csv.Error as exc:
            raise ConfigError(f"manifest {name} line {reader.line_num}: not valid CSV ({exc})") from exc
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"manifest {name} line {number}: not valid JSON ({exc.msg}); "
                "write one JSON object per line"
            ) from exc
        if isinstance(row, str):
            row = {"uri": row}
        if not isinstance(row, dict):
            raise ConfigError(
                f"manifest {name} line {number}: expected a JSON object like "
                f'{{"uri": "a.png"}}, got {type(row).__name__}'
            )
        yield number, row


def _resolve_relative(uri: str, manifest_uri: str) -> str:
    """``uri`` as written in a manifest, made absolute against the manifest's folder."""
    if _protocol(uri) is not None or os.path.isabs(uri):
        return canonical_uri(uri)
    local = _local_path(manifest_uri)
    if local is not None:
        return os.path.normpath(os.path.join(os.path.dirname(local), uri))
    protocol, _, path = manifest_uri.partition("://")
    joined = os.path.normpath(PurePosixPath(path).parent.joinpath(uri).as_posix())
    return f"{protocol}://{joined}"


def _items_from_manifest(manifest_uri: str) -> list[SourceItem]:
    suffix = PurePosixPath(manifest_uri).suffix.lower()
    try:
        with fsspec.open(manifest_uri, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"manifest {manifest_uri} cannot be read: {exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"manifest {manifest_uri} is not UTF-8 text ({exc}); save it as UTF-8") from exc
    items = []
    for number, row in _manifest_rows(text, manifest_uri, suffix):
        column = next((c for c in URI_COLUMNS if row.get(c) not in (None, "")), None)
        meta = {k: v for k, v in row.items() if k != column}
        captured_at, bad_time = _parse_captured_at(meta)
        if column is None:
            error = (
                f"missing uri: manifest row {number} has no uri "
                f"(fill one of the columns {', '.join(URI_COLUMNS)})"
            )
            items.append(SourceItem(uri=f"{manifest_uri}#line={number}", meta=meta,
                                    captured_at=captured_at, error=error))
            continue
        uri = _resolve_relative(str(row[column]).strip(), manifest_uri)
        items.append(_item(uri, meta, captured_at, bad_time))
    return items


def _item(uri: str, meta: dict[str, Any] | None = None, captured_at: datetime | None = None,
          error: str | None = None) -> SourceItem:
    """A SourceItem, marked failed up front when its protocol cannot be opened here."""
    protocol = _protocol(uri)
    if error is None and protocol is not None and protocol not in ("file", "local"):
        error = _unknown_protocol_reason(protocol)
    return SourceItem(uri=uri, meta=dict(meta or {}), captured_at=captured_at, error=error)


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
    protocol = _protocol(source)
    local = _local_path(source)
    suffix = PurePosixPath(source.split("?", 1)[0]).suffix.lower()
    if local is None:
        assert protocol is not None
        bad = _unknown_protocol_reason(protocol)
        if bad is not None:
            if _is_image_name(source):
                return [SourceItem(uri=source, meta={}, captured_at=None, error=bad)]
            raise ConfigError(f"cannot list source {source}: {bad.split(': ', 1)[1]}")
        fs, path = fsspec.core.url_to_fs(source)
        if suffix in MANIFEST_SUFFIXES and fs.isfile(path):
            return _items_from_manifest(fs.unstrip_protocol(path))
        listed = _list_remote(fs, path, recursive)
        if listed is None:
            raise ConfigError(f"source {source} does not exist: give an existing prefix, file or glob")
        return [_item(u) for u in listed]
    if any(c in local for c in _GLOB_CHARS) and not os.path.exists(local):
        return [_item(p) for p in sorted(globlib.glob(local, recursive=True)) if os.path.isfile(p)]
    if os.path.isdir(local):
        return [_item(p) for p in _list_local_dir(local, recursive)]
    if os.path.isfile(local):
        if suffix in MANIFEST_SUFFIXES:
            return _items_from_manifest(local)
        return [_item(local)]
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
        items = [_item(canonical_uri(e)) for e in entries]
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
    local = _local_path(uri)
    try:
        if local is not None:
            with open(local, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise ImageDecodeError(_size_reason(size, max_bytes))
                data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        else:
            protocol = _protocol(uri)
            assert protocol is not None
            bad = _unknown_protocol_reason(protocol)
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
    local = _local_path(item.uri)
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
