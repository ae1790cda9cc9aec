"""Manifests: a batch listed as a file with one image per row (``.jsonl``/``.ndjson`` or ``.csv``).

Each row names its image in a URI column (``uri``, ``path`` or ``file``; relative to the manifest)
and may carry any metadata columns, stored with the image; ``captured_at`` (or ``capture_time``)
is read as the capture time. A row without a URI, or with a capture time that is not a time,
becomes a failed item with its reason: one bad row never stops the batch.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import fsspec

from t2c_monitor.errors import ConfigError
from t2c_monitor.redaction import carries_credentials, mask_url
from t2c_monitor.textfiles import clip, decode_text, read_bytes_bounded
from t2c_monitor.uris import SourceItem, canonical_uri, local_path, make_item, protocol_of

MANIFEST_SUFFIXES: frozenset[str] = frozenset({".jsonl", ".ndjson", ".csv"})
MAX_MANIFEST_BYTES = 256 << 20
"""A larger manifest is refused (about two million rows): split the batch."""
URI_COLUMNS: tuple[str, ...] = ("uri", "path", "file")
"""Manifest columns that may hold the image URI, in order of preference."""
CAPTURED_AT_KEYS: tuple[str, ...] = ("captured_at", "capture_time")


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
                    f"manifest {name} line 1: header {clip(header)} has no uri column: "
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
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, an integer of 5,000 digits, 10,000 [[[
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply or a number too long"
            raise ConfigError(
                f"manifest {name} line {number}: not valid JSON ({reason}); "
                "write one JSON object per line"
            ) from None
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
    if protocol_of(uri) is not None or os.path.isabs(uri):
        return canonical_uri(uri)
    local = local_path(manifest_uri)
    if local is not None:
        return os.path.normpath(os.path.join(os.path.dirname(local), uri))
    protocol, _, path = manifest_uri.partition("://")
    joined = os.path.normpath(PurePosixPath(path).parent.joinpath(uri).as_posix())
    return f"{protocol}://{joined}"


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def items_from_manifest(manifest_uri: str) -> list[SourceItem]:
    suffix = PurePosixPath(manifest_uri).suffix.lower()
    local = local_path(manifest_uri)
    if local is not None:
        raw = read_bytes_bounded(local, what="manifest", max_bytes=MAX_MANIFEST_BYTES)
    else:
        try:
            with fsspec.open(manifest_uri, "rb") as fh:
                raw = fh.read(MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"manifest {manifest_uri} cannot be read: {exc}") from exc
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ConfigError(f"manifest {manifest_uri} is larger than {MAX_MANIFEST_BYTES:,} bytes: split the batch.")
    text = decode_text(raw, where=f"manifest {manifest_uri}", allow_nul=True)  # a row with a NUL fails alone
    items = []
    remote = local_path(manifest_uri) is None
    for number, row in _manifest_rows(text, manifest_uri, suffix):
        nul = sorted(str(k).replace("\x00", "\\0") for k, v in row.items() if _holds_nul(k) or _holds_nul(v))
        if nul:  # PostgreSQL can store no NUL byte, in text or in JSON: the row fails, the batch goes on
            error = (f"bad metadata: manifest row {number} holds a NUL byte in {', '.join(nul)}; "
                     "remove it from the manifest")
            clean = {k: v for k, v in row.items() if not (_holds_nul(k) or _holds_nul(v))}
            column = next((c for c in URI_COLUMNS if clean.get(c) not in (None, "")), None)
            uri = (_resolve_relative(str(clean[column]).strip(), manifest_uri) if column
                   else f"{manifest_uri}#line={number}")
            items.append(SourceItem(uri=uri, meta={k: v for k, v in clean.items() if k != column}, error=error))
            continue
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
        if carries_credentials(uri):  # it would be stored and reported: the row fails, kept without the secret
            items.append(SourceItem(uri=mask_url(uri), meta=meta, captured_at=captured_at,
                                    error=f"refused: manifest row {number}'s URI carries a credential: give it to the "
                                          "filesystem through its environment or fsspec configuration instead"))
            continue
        if remote and local_path(uri) is not None:  # whoever wrote a remote manifest may not read our disk
            items.append(SourceItem(uri=uri, meta=meta, captured_at=captured_at,
                                    error=f"refused: the remote manifest {manifest_uri} lists a local file"))
            continue
        items.append(make_item(uri, meta, captured_at, bad_time))
    return items
