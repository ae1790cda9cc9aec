"""Where an image is: the ``SourceItem`` of a batch, URI protocols, and canonical URIs.

Canonical URIs: local files are absolute POSIX paths without a scheme (``/data/a.png``;
``file://`` URIs are converted to that form); everything else keeps its protocol, as fsspec
writes it (``s3://bucket/a.png``, ``memory:///bucket/a.png``). An item whose protocol no
installed fsspec implementation can open is marked failed up front, with what to install.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import fsspec
from fsspec.registry import known_implementations


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

def protocol_of(uri: str) -> str | None:
    """The scheme of ``uri`` (``"s3"``), or None for a plain local path."""
    head, sep, _ = uri.partition("://")
    if not sep or not head or "/" in head:
        return None
    return head.lower()


def unknown_protocol_reason(protocol: str) -> str | None:
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


def local_path(uri: str) -> str | None:
    """The absolute local path ``uri`` names, or None when it is a remote URI."""
    protocol = protocol_of(uri)
    if protocol is None:
        return os.path.abspath(os.path.expanduser(uri))
    if protocol in ("file", "local"):
        return os.path.abspath(uri.partition("://")[2] or "/")
    return None


def canonical_uri(uri: str) -> str:
    """The canonical spelling of ``uri``: absolute path for local files, the URI itself otherwise."""
    local = local_path(uri)
    return local if local is not None else uri

def make_item(uri: str, meta: dict[str, Any] | None = None, captured_at: datetime | None = None,
          error: str | None = None) -> SourceItem:
    """A SourceItem, marked failed up front when its protocol cannot be opened here."""
    protocol = protocol_of(uri)
    if error is None and protocol is not None and protocol not in ("file", "local"):
        error = unknown_protocol_reason(protocol)
    return SourceItem(uri=uri, meta=dict(meta or {}), captured_at=captured_at, error=error)
