"""Storing ingested images and their concept scores, exactly once, by binary COPY.

A chunk goes straight into ``image`` by binary COPY, with ids taken from the sequence beforehand,
each image's concept scores in its row (``image.scores``, against the bank of its batch:
``batch.bank_id``, no per-row key). A batch opened without a bank takes the bank of its first
scored chunk. Scores against another bank (a batch resumed by a monitor whose bank changed since
the batch was opened) are never mixed into the row: they go to ``image_score`` under their bank,
as audits' rescoring stores them. An image that repeats the content (sha256) of one earlier in
the chunk is recorded as a failed duplicate naming the first copy. The batch's unique constraints on URI and on
the content of ok images see anything the batch already holds (a rerun, a run killed half way, a
second run racing this one): the write is then undone to a savepoint, the URIs the batch holds are
dropped from the chunk, images whose content it holds as ok become failed duplicates, and the rest
is written again. A fresh chunk thus costs no lookups, and nothing is stored twice. Each chunk is
one transaction of the caller's.

That transaction commits without waiting for the disk (``synchronous_commit`` off for it alone): a
crash of the server may lose the last chunks committed, whole, never part of one, and a rerun
stores them. The write-ahead log is flushed in order, so the ordinary commit that marks the batch
stored (``batches.finish_batch``) makes every chunk before it durable.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import ARRAY, Connection, Engine, Text, any_, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError

from t2c_monitor.store import batches, copy
from t2c_monitor.store.models import Batch, Image


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


def _text_array(name: str, values: list[str]) -> Any:
    """One array parameter (``= ANY(:name)``): a chunk's hundreds of values travel as one bound array."""
    return bindparam(name, values, type_=ARRAY(Text))


def _already_stored(conn: Connection, batch_id: int, chunk: ImageChunk) -> tuple[set[str], dict[str, str]]:
    """URIs of this chunk the batch already holds, and sha256 -> uri of its ok images with this content."""
    uris = conn.execute(select(Image.uri).where(Image.batch_id == batch_id,
                                                Image.uri == any_(_text_array("uris", list(chunk.uris))))).scalars()
    shas = [s for s in chunk.sha256 if s is not None]
    ok_content = conn.execute(select(Image.sha256, Image.uri).where(
        Image.batch_id == batch_id, Image.status == "ok", Image.sha256 == any_(_text_array("shas", shas)))).all()
    return set(uris), {row.sha256: row.uri for row in ok_content}


def _new_rows(chunk: ImageChunk, stored_uris: set[str],
              stored_content: dict[str, str]) -> tuple[list[int], list[str | None]]:
    """Indices of rows to write, and their failure reasons with duplicates of stored content marked."""
    keep: list[int] = []
    reasons: list[str | None] = []
    first_uri = dict(stored_content)
    for i, (uri, sha, reason) in enumerate(zip(chunk.uris, chunk.sha256, chunk.failure_reason, strict=True)):
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


_UNIQUE_VIOLATION = "23505"
_ATTEMPTS = 4  # the first write, then up to three after looking at what the batch holds


def store_chunk(conn: Connection, *, batch_id: int, monitor_id: int, bank_id: int | None,
                chunk: ImageChunk) -> StoredCounts:
    """Store ``chunk`` in ``conn``'s transaction; images already stored for the batch are skipped."""
    if chunk.scores is not None and chunk.n_ok and bank_id is None:
        raise ValueError("bank_id is required when the chunk has scores")
    if not chunk.uris:
        return StoredCounts(0, 0, 0, 0)
    conn.execute(text("SET LOCAL synchronous_commit = off"))  # durable with the batch: see the module docstring
    in_row = chunk.scores is not None and chunk.n_ok > 0 and _batch_bank(conn, batch_id, bank_id) == bank_id
    stored: tuple[set[str], dict[str, str]] = (set(), {})  # first, as if the batch held none of it
    for attempt in range(_ATTEMPTS):
        try:
            with conn.begin_nested():
                return _write(conn, batch_id, monitor_id, bank_id, chunk, *stored, in_row=in_row)
        except IntegrityError as exc:
            # a unique constraint saw an image the batch holds (a rerun, or a run racing this one):
            # filter against what it holds now and write again; anything else is a real error
            if getattr(exc.orig, "pgcode", None) != _UNIQUE_VIOLATION or attempt == _ATTEMPTS - 1:
                raise
        stored = _already_stored(conn, batch_id, chunk)
    raise AssertionError("unreachable")


def _batch_bank(conn: Connection, batch_id: int, bank_id: int) -> int:
    """The bank the batch's ``image.scores`` are against; a batch without one takes ``bank_id``."""
    bank = batches.batch_bank(conn, batch_id)
    if bank is None:  # rare (batches are opened with their monitor's bank): the row lock is brief
        bank = conn.execute(update(Batch).where(Batch.id == batch_id)
                            .values(bank_id=func.coalesce(Batch.bank_id, bank_id)).returning(Batch.bank_id)
                            ).scalar_one_or_none()
    if bank is None:
        raise ValueError(f"batch {batch_id} does not exist")
    return int(bank)


def _new_ids(conn: Connection, n: int) -> np.ndarray:
    """``n`` ids from image's sequence, taken before the COPY so that scores can name their image."""
    ids = conn.execute(
        text("SELECT array_agg(nextval(s)) FROM CAST(pg_get_serial_sequence('image', 'id') AS regclass) AS s, "
             "generate_series(1, :n)"),
        {"n": n},
    ).scalar_one()
    return np.asarray(ids, dtype=np.int64)


def _write(conn: Connection, batch_id: int, monitor_id: int, bank_id: int | None, chunk: ImageChunk,
           stored_uris: set[str], stored_content: dict[str, str], *, in_row: bool) -> StoredCounts:
    n = len(chunk.uris)
    keep, reasons = _new_rows(chunk, stored_uris, stored_content)
    if not keep:
        return StoredCounts(0, 0, n, 0)
    rows = _Rows(chunk, keep, reasons, _new_ids(conn, len(keep)))
    images = (rows.image_columns(block, batch_id, monitor_id, with_scores=in_row) for block in rows.blocks())
    copy.copy_blocks(conn, "image", images)
    n_scores = rows.n_ok if in_row else 0
    if chunk.scores is not None and rows.n_ok and not in_row:  # another bank than the batch's: never mixed
        scores = (rows.score_columns(block, bank_id) for block in rows.blocks())
        n_scores = copy.copy_blocks(conn, "image_score", scores)
    return StoredCounts(ok=rows.n_ok, failed=len(keep) - rows.n_ok, skipped=n - len(keep), scores=n_scores)


_BLOCK_ROWS = 512  # rows encoded at a time while the server stores the previous ones (fewer: numpy overheads add up)


class _Rows:
    """The rows of a chunk to write (``keep``), with their ids, as COPY columns block by block."""

    def __init__(self, chunk: ImageChunk, keep: list[int], reasons: list[str | None], ids: np.ndarray) -> None:
        self.chunk, self.keep, self.reasons, self.ids = chunk, keep, reasons, ids
        self.ok = np.array([r is None for r in reasons], dtype=bool)
        self.n_ok = int(self.ok.sum())
        kept = np.asarray(keep, dtype=np.int64)
        self.vector_row = np.cumsum(chunk.ok)[kept] - 1  # row in embeddings / scores, where ok

    def blocks(self) -> list[slice]:
        return [slice(lo, lo + _BLOCK_ROWS) for lo in range(0, len(self.keep), _BLOCK_ROWS)]

    def _pick(self, values: list[Any], block: slice) -> list[Any]:
        if len(self.keep) == len(self.chunk.uris):  # nothing dropped: rows are the chunk's own
            return values[block]
        return [values[i] for i in self.keep[block]]

    def image_columns(self, block: slice, batch_id: int, monitor_id: int, *,
                      with_scores: bool) -> list[copy.Column]:
        chunk, ok = self.chunk, self.ok[block]
        n, dim = len(ok), chunk.embeddings.shape[1]
        vector_rows = self.vector_row[block][ok]
        columns = [
            copy.int_column("id", self.ids[block], bits=64),
            copy.int_column("batch_id", np.full(n, batch_id)),
            copy.int_column("monitor_id", np.full(n, monitor_id)),
            copy.text_column("uri", self._pick(chunk.uris, block)),
            copy.text_column("sha256", self._pick(chunk.sha256, block)),
            copy.int_column("width", self._pick(chunk.width, block)),
            copy.int_column("height", self._pick(chunk.height, block)),
            copy.int_column("n_bytes", self._pick(chunk.n_bytes, block), bits=64),
            copy.jsonb_column("meta", self._pick(chunk.meta, block)),
            copy.timestamptz_column("captured_at", self._pick(chunk.captured_at, block)),
            copy.text_column("status", ["ok" if o else "failed" for o in ok]),
            copy.text_column("failure_reason", self.reasons[block]),
            copy.int_column("dim", [dim if o else None for o in ok]),
            copy.vector_column("embedding", chunk.embeddings[vector_rows], present=ok),
        ]
        if with_scores:
            columns.append(copy.real_array_column("scores", chunk.scores[vector_rows], present=ok))
        return columns

    def score_columns(self, block: slice, bank_id: int | None) -> list[copy.Column]:
        ok = self.ok[block]
        rows = self.vector_row[block][ok]
        return [
            copy.int_column("image_id", self.ids[block][ok], bits=64),
            copy.int_column("bank_id", np.full(len(rows), bank_id)),
            copy.real_array_column("scores", self.chunk.scores[rows]),
        ]


class ChunkWriter:
    """Stores the chunks of one batch on up to ``writers`` connections at once, each chunk in its
    own transaction (``store_chunk``), while the caller prepares the next ones.

    One connection keeps one server process busy; the server's side of a COPY (parsing rows,
    the heap, four index entries and a foreign-key check per row) is most of a store's work, so a
    second connection roughly doubles what a server with cores to spare stores per second. Chunks
    are independent: ids are drawn per chunk, a failure in one leaves the others stored, and a
    rerun fills in what is missing. ``submit`` blocks while ``writers`` chunks are in flight (at
    most that many wait in memory). Leaving the ``with`` block waits for every chunk and raises
    the first error.
    """

    def __init__(self, engine: Engine, *, batch_id: int, monitor_id: int, bank_id: int | None,
                 writers: int = 2) -> None:
        if writers < 1:
            raise ValueError(f"writers must be at least 1, got {writers}")
        self.engine, self.writers = engine, writers
        self._ids = {"batch_id": batch_id, "monitor_id": monitor_id, "bank_id": bank_id}
        self._pool = ThreadPoolExecutor(writers, thread_name_prefix="t2c-store")
        self._in_flight: list[Future] = []
        self.counts = StoredCounts(0, 0, 0, 0)
        self.seconds = 0.0
        """Time spent in ``store_chunk`` summed over chunks (writers overlap, so it can exceed wall time)."""
        self._lock = threading.Lock()

    def _store(self, chunk: ImageChunk) -> None:
        started = time.perf_counter()
        with self.engine.begin() as conn:
            stored = store_chunk(conn, chunk=chunk, **self._ids)
        with self._lock:
            c = self.counts
            self.counts = StoredCounts(c.ok + stored.ok, c.failed + stored.failed, c.skipped + stored.skipped,
                                       c.scores + stored.scores)
            self.seconds += time.perf_counter() - started

    def submit(self, chunk: ImageChunk) -> None:
        """Queue ``chunk``; waits first while ``writers`` chunks are in flight, raising an earlier chunk's error."""
        while len(self._in_flight) >= self.writers:
            done, _ = wait(self._in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                self._in_flight.remove(future)
                future.result()
        self._in_flight.append(self._pool.submit(self._store, chunk))

    def close(self) -> None:
        """Wait for every chunk; raise the first error after all have finished."""
        try:
            errors = [f.exception() for f in self._in_flight]
            self._in_flight.clear()
            first = next((e for e in errors if e is not None), None)
            if first is not None:
                raise first
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
