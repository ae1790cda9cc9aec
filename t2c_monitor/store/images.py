"""Storing ingested images and their concept scores, exactly once, by binary COPY.

Before a chunk is written, the URIs the batch already holds are dropped from it, and an image
whose content (sha256) the batch already holds as ok, or that repeats earlier in the chunk, is
recorded as a failed duplicate naming the first copy. What remains goes straight into ``image`` and
``image_score`` by binary COPY with ids taken from the sequence beforehand. Rerunning a batch, or
finishing one that was killed half way, therefore stores nothing twice; the unique constraints are
the backstop when two runs of one batch race (the chunk is re-filtered and written again). Each
chunk is one transaction of the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from t2c_monitor.store import copy


@dataclass
class ImageChunk:
    """Images of one batch ready to store, in columns. ``failure_reason`` None means ok; the
    ``embeddings`` and ``scores`` rows belong to the ok images, in order."""

    uris: list[str]
    failure_reason: list[str | None]
    embeddings: np.ndarray
    scores: np.ndarray | None = None
    sha256: list[str | None] = field(default_factory=list)
    width: list[int | None] = field(default_factory=list)
    height: list[int | None] = field(default_factory=list)
    n_bytes: list[int | None] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)
    captured_at: list[datetime | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.uris)
        for name in ("sha256", "width", "height", "n_bytes", "captured_at"):
            if not getattr(self, name):
                setattr(self, name, [None] * n)
        if not self.meta:
            self.meta = [{} for _ in range(n)]
        for name in ("failure_reason", "sha256", "width", "height", "n_bytes", "meta", "captured_at"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} uris")
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32).reshape(-1, self.embeddings.shape[-1])
        if len(self.embeddings) != self.n_ok:
            raise ValueError(f"embeddings has {len(self.embeddings)} rows for {self.n_ok} ok images")
        if self.scores is not None and len(self.scores) != self.n_ok:
            raise ValueError(f"scores has {len(self.scores)} rows for {self.n_ok} ok images")

    @property
    def ok(self) -> np.ndarray:
        return np.array([r is None for r in self.failure_reason], dtype=bool)

    @property
    def n_ok(self) -> int:
        return int(self.ok.sum())


@dataclass(frozen=True)
class StoredCounts:
    ok: int
    failed: int
    skipped: int
    scores: int


def _already_stored(conn: Connection, batch_id: int, chunk: ImageChunk) -> tuple[set[str], dict[str, str]]:
    """URIs of this chunk the batch already holds, and sha256 -> uri of its ok images with this content."""
    uris = conn.execute(
        text("SELECT uri FROM image WHERE batch_id = :b AND uri = ANY(:uris)"), {"b": batch_id, "uris": chunk.uris}
    ).scalars()
    shas = [s for s in chunk.sha256 if s is not None]
    ok_content = conn.execute(
        text("SELECT sha256, uri FROM image WHERE batch_id = :b AND status = 'ok' AND sha256 = ANY(:shas)"),
        {"b": batch_id, "shas": shas},
    ).all()
    return set(uris), {row.sha256: row.uri for row in ok_content}


def _new_rows(chunk: ImageChunk, stored_uris: set[str], stored_content: dict[str, str]) -> tuple[list[int], list[str | None]]:
    """Indices of rows to write, and their failure reasons with duplicates of stored content marked."""
    keep: list[int] = []
    reasons: list[str | None] = []
    first_uri = dict(stored_content)
    for i, (uri, sha, reason) in enumerate(zip(chunk.uris, chunk.sha256, chunk.failure_reason)):
        if uri in stored_uris:
            continue
        if reason is None and sha is not None:
            if sha in first_uri:
                reason = f"duplicate: same content as {first_uri[sha]}"
            else:
                first_uri[sha] = uri
        keep.append(i)
        reasons.append(reason)
    return keep, reasons


def store_chunk(conn: Connection, *, batch_id: int, monitor_id: int, bank_id: int | None, chunk: ImageChunk) -> StoredCounts:
    """Store ``chunk`` in ``conn``'s transaction; images already stored for the batch are skipped."""
    if chunk.scores is not None and chunk.n_ok and bank_id is None:
        raise ValueError("bank_id is required when the chunk has scores")
    for attempt in range(3):
        try:
            with conn.begin_nested():
                return _write(conn, batch_id, monitor_id, bank_id, chunk)
        except IntegrityError:
            if attempt == 2:  # not a race with another run: a real conflict to report
                raise
    raise AssertionError("unreachable")


def _write(conn: Connection, batch_id: int, monitor_id: int, bank_id: int | None, chunk: ImageChunk) -> StoredCounts:
    n = len(chunk.uris)
    if n == 0:
        return StoredCounts(0, 0, 0, 0)
    keep, reasons = _new_rows(chunk, *_already_stored(conn, batch_id, chunk))
    if not keep:
        return StoredCounts(0, 0, n, 0)
    was_ok = chunk.ok
    ok_row = np.cumsum(was_ok) - 1  # row of each ok image in embeddings / scores
    ok_now = np.array([r is None for r in reasons], dtype=bool)
    rows_ok = np.array([ok_row[i] for i, o in zip(keep, ok_now) if o], dtype=np.int64)
    embeddings = chunk.embeddings[rows_ok]
    dim = chunk.embeddings.shape[1]
    ids = conn.execute(
        text("SELECT nextval(pg_get_serial_sequence('image', 'id')) FROM generate_series(1, :n)"), {"n": len(keep)}
    ).scalars().all()
    pick = lambda values: [values[i] for i in keep]  # noqa: E731
    copy.copy_into(
        conn,
        "image",
        [
            copy.int_column("id", ids, bits=64),
            copy.int_column("batch_id", [batch_id] * len(keep)),
            copy.int_column("monitor_id", [monitor_id] * len(keep)),
            copy.text_column("uri", pick(chunk.uris)),
            copy.text_column("sha256", pick(chunk.sha256)),
            copy.int_column("width", pick(chunk.width)),
            copy.int_column("height", pick(chunk.height)),
            copy.int_column("n_bytes", pick(chunk.n_bytes), bits=64),
            copy.jsonb_column("meta", pick(chunk.meta)),
            copy.timestamptz_column("captured_at", pick(chunk.captured_at)),
            copy.text_column("status", ["ok" if o else "failed" for o in ok_now]),
            copy.text_column("failure_reason", reasons),
            copy.int_column("dim", [dim if o else None for o in ok_now]),
            copy.vector_column("embedding", embeddings, present=ok_now),
        ],
    )
    n_scores = 0
    if chunk.scores is not None and len(rows_ok):
        ok_ids = [i for i, o in zip(ids, ok_now) if o]
        n_scores = copy.copy_into(
            conn,
            "image_score",
            [
                copy.int_column("image_id", ok_ids, bits=64),
                copy.int_column("bank_id", [bank_id] * len(ok_ids)),
                copy.real_array_column("scores", chunk.scores[rows_ok]),
            ],
        )
    n_ok = int(ok_now.sum())
    return StoredCounts(ok=n_ok, failed=len(keep) - n_ok, skipped=n - len(keep), scores=n_scores)
