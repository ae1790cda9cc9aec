"""Ingest: embed a batch of images with the deployed encoder, align them into CLIP space, score
them against the monitor's concept bank, and store vectors and scores.

A batch runs in three steps that the Prefect flow composes (and ``ingest`` composes locally):
``plan_batch`` opens the batch row (its id is given, or derived from the content) and leaves out
what an earlier run of the same batch already stored; ``ingest_items`` embeds and stores a list
of items (the whole batch, or one shard of it on a Dask worker); ``finish_batch`` recounts the
batch from its rows and marks it ``stored`` or ``failed``.

Inside ``ingest_items`` the stages overlap: worker threads read, decode and preprocess images
ahead of the encoder (bounded prefetch, in order), the encoder and aligner run on the device in
batches, and writer threads (``store_writers``, each with its own connection) store finished
chunks by binary COPY while the next ones are embedded. Bad images never stop the batch: each
is stored as a failed row with its reason.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from t2c_monitor.daemon_pool import DaemonPool
from t2c_monitor.errors import SpaceMismatchError
from t2c_monitor.images import DecodedImage, FailedImage, load_image
from t2c_monitor.ingest_checks import check_batch_id, check_source
from t2c_monitor.progress import progress_bar
from t2c_monitor.sources import SourceItem, content_batch_id, resolve_source
from t2c_monitor.store import Database
from t2c_monitor.store import batches as batch_store
from t2c_monitor.store.images import ChunkWriter, ImageChunk
from t2c_monitor.store.monitors import MonitorRecord, get_monitor

STAGES = ("decode", "encode", "align_score", "store")


@dataclass(frozen=True)
class IngestOptions:
    batch_size: int = 64
    chunk_size: int = 512
    decode_threads: int = 2
    store_writers: int = 2
    max_image_pixels: int = 64_000_000
    max_image_bytes: int | None = 64 * 1024**2
    decode_timeout_s: float = 60.0
    progress: bool = False

    @classmethod
    def for_monitor(cls, record: MonitorRecord, *, progress: bool = False, **overrides: Any) -> IngestOptions:
        """Options from the monitor's ``ingest`` config and the settings' image limits."""
        from t2c_monitor.settings import get_settings

        settings = get_settings()
        ingest = record.config.ingest
        values = {
            "batch_size": ingest.batch_size,
            "chunk_size": ingest.chunk_size,
            "decode_threads": ingest.decode_threads,
            "store_writers": ingest.store_writers,
            "decode_timeout_s": ingest.decode_timeout_s,
            "max_image_pixels": settings.max_image_pixels,
            "max_image_bytes": settings.max_image_bytes,
            "progress": progress,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class MonitorRuntime:
    """A recorded monitor with its encoder and aligner loaded and checked against the record."""

    record: MonitorRecord
    encoder: Any  # SourceEncoder
    aligner: Any  # Aligner
    bank: torch.Tensor  # (k, d) unit concept vectors, rows in score-column order

    def align_and_score(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Source features -> (unit aligned vectors (n, d), concept scores (n, k))."""
        aligned = F.normalize(self.aligner.transform(features), dim=1)
        return aligned.numpy(), (aligned @ self.bank.T).numpy()

    def embed(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed pixels -> (unit aligned vectors (n, d), concept scores (n, k))."""
        return self.align_and_score(self.encoder.encode(pixels))


def load_runtime(db: Database, monitor: str, *, device: str | None = None) -> MonitorRuntime:
    """Load a monitor's encoder and aligner; refuse, before any image is read, models that no
    longer match what was recorded by ``t2c monitor apply``."""
    from t2c_monitor.aligner import Aligner
    from t2c_monitor.encoders import create_source_encoder
    from t2c_monitor.identity import same_space

    with db.session() as session:
        record = get_monitor(session, monitor)
    encoder = create_source_encoder(record.config.encoder, device=device)
    if not same_space(encoder.identity, record.encoder):
        raise SpaceMismatchError(
            f"Monitor {record.name}: the encoder {record.config.encoder} now has weights "
            f"{encoder.identity.weights_sha256[:12]} ({encoder.identity.dim}-d), but the monitor was applied with "
            f"{record.encoder.weights_sha256[:12]} ({record.encoder.dim}-d). Its aligner and baseline belong to "
            "the old weights: fit an aligner for the new encoder and run `t2c monitor apply` again."
        )
    aligner = Aligner.load(record.aligner_path, expect_source=encoder.identity,
                           expect_clip=record.clip)
    if aligner.d_out != record.concept_vectors.shape[1]:
        raise SpaceMismatchError(
            f"Monitor {record.name}: the aligner maps into {aligner.d_out}-d space but bank {record.bank_name} "
            f"v{record.bank_version} holds {record.concept_vectors.shape[1]}-d vectors: encode the bank with the "
            "aligner's CLIP model and run `t2c monitor apply` again."
        )
    bank = F.normalize(torch.tensor(record.concept_vectors), dim=1)  # a copy: the cached record is read-only
    return MonitorRuntime(record=record, encoder=encoder, aligner=aligner, bank=bank)


@dataclass(frozen=True)
class BatchPlan:
    batch_id: int
    external_id: str
    items: list[SourceItem]  # what is left to store
    n_source: int  # items the source listed
    n_repeated: int  # repeated URIs in the source, ingested once


def plan_batch(db: Database, record: MonitorRecord, items: Sequence[SourceItem], *, source_uri: str,
               batch_id: str | None = None) -> BatchPlan:
    """Open (or reopen) the batch row, mark it ``embedding``, and list the items still to store (those
    outside the monitor's ``ingest.allowed_roots`` marked refused: they are recorded, never read)."""
    from t2c_monitor.sources import check_allowed_roots

    items = check_allowed_roots(items, record.config.ingest.allowed_roots)
    unique: dict[str, SourceItem] = {}
    for item in items:
        unique.setdefault(item.uri, item)
    external_id = check_batch_id(batch_id) or content_batch_id(list(unique.values()))
    with db.engine.begin() as conn:
        row_id, _ = batch_store.open_batch(conn, monitor_id=record.id, external_id=external_id, source_uri=source_uri,
                                           bank_id=record.bank_id)
        batch_store.set_status(conn, row_id, "embedding")
        done = batch_store.stored_uris(conn, row_id)
    todo = [item for uri, item in unique.items() if uri not in done]
    return BatchPlan(batch_id=row_id, external_id=external_id, items=todo, n_source=len(items),
                     n_repeated=len(items) - len(unique))


def inbox_batch_id(interval: timedelta, now: datetime | None = None) -> str:
    """The batch an inbox run fills: one per interval (``inbox-<start of the interval, UTC>``), so a
    rerun within the interval completes the same batch."""
    now = now or datetime.now(UTC)
    step = max(1, int(interval.total_seconds()))
    start = datetime.fromtimestamp(int(now.timestamp()) // step * step, UTC)
    return f"{batch_store.INBOX_PREFIX}{start:%Y%m%dT%H%M%SZ}"


def new_items(db: Database, record: MonitorRecord, items: Sequence[SourceItem], *,
              batch_id: str) -> list[SourceItem]:
    """The items of an inbox the monitor does not hold yet (those of this interval's batch ``batch_id``
    count as new until the batch is stored, so a killed run is completed)."""
    with db.engine.connect() as conn:
        seen = batch_store.uris_held(conn, record.id, batch_id, [i.uri for i in items])
    return [i for i in items if i.uri not in seen]


@contextmanager
def exclusive_inbox(db: Database, record: MonitorRecord) -> Iterator[bool]:
    """Hold the monitor's inbox for one run (yields whether it is held): two runs at once would each take the
    files the other has not stored yet. A run that is killed, or loses the database, releases it."""
    with batch_store.inbox_lock(db.engine, record.id) as held:
        yield held


def close_interrupted_inbox_batches(db: Database, record: MonitorRecord, *,
                                    current: str) -> list[batch_store.BatchSummary]:
    """Finish the inbox batches of earlier intervals that a killed or failed run left (call it holding the
    inbox): each keeps the images it stored and is counted ``stored`` (``failed`` if it has none ok); its
    files not stored are new again, so this interval's batch takes them. No file is lost or stored twice."""
    with db.engine.begin() as conn:
        return [batch_store.finish_batch(conn, b, timings={})
                for b in batch_store.interrupted_inbox_batches(conn, record.id, current=current)]


@dataclass
class _Chunk:
    """Rows collected for one store transaction; ok rows carry their vector and scores."""

    uris: list[str] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)
    sha256: list[str | None] = field(default_factory=list)
    width: list[int | None] = field(default_factory=list)
    height: list[int | None] = field(default_factory=list)
    n_bytes: list[int | None] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)
    captured_at: list[Any] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)

    def add(self, item: SourceItem, result: DecodedImage | FailedImage, reason: str | None) -> None:
        self.uris.append(item.uri)
        self.reasons.append(reason)
        self.sha256.append(result.sha256)
        self.n_bytes.append(result.n_bytes)
        self.width.append(getattr(result, "width", None))
        self.height.append(getattr(result, "height", None))
        self.meta.append(dict(item.meta))
        self.captured_at.append(item.captured_at)

    def __len__(self) -> int:
        return len(self.uris)

    def freeze(self, dim: int, k: int) -> ImageChunk:
        return ImageChunk(
            uris=self.uris, failure_reason=self.reasons,
            embeddings=np.concatenate(self.vectors) if self.vectors else np.zeros((0, dim), np.float32),
            scores=np.concatenate(self.scores) if self.scores else np.zeros((0, k), np.float32),
            sha256=self.sha256, width=self.width, height=self.height, n_bytes=self.n_bytes, meta=self.meta,
            captured_at=self.captured_at,
        )


def _prefetch(pool: DaemonPool, fn: Callable, items: Sequence, depth: int, *,
              timeout: float | None = None, on_timeout: Callable[[Any], Any] | None = None) -> Iterator:
    """``map(fn, items)`` on ``pool`` in order, with at most ``depth`` calls in flight. A call whose result
    is not there ``timeout`` seconds after it is awaited gives ``on_timeout(item)`` instead (its thread
    is left to finish on its own: Python cannot stop it, but the batch need not wait for it)."""
    pending: deque[tuple[Any, Future]] = deque()
    it = iter(items)
    for item in it:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= depth:
            break
    while pending:
        item, future = pending.popleft()
        try:
            yield future.result(timeout=timeout)
        except FuturesTimeout:
            if on_timeout is None:
                raise
            future.cancel()
            yield on_timeout(item)
        nxt = next(it, None)
        if nxt is not None:
            pending.append((nxt, pool.submit(fn, nxt)))


def ingest_items(db: Database, runtime: MonitorRuntime, batch_id: int, items: Sequence[SourceItem],
                 options: IngestOptions, *, log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Embed, score and store ``items`` into batch ``batch_id``; returns seconds spent per stage."""
    timings = dict.fromkeys(STAGES, 0.0)
    record = runtime.record
    dim, k = runtime.aligner.d_out, runtime.bank.shape[0]
    preprocess = runtime.encoder.preprocess

    def decode(item: SourceItem):
        started = time.perf_counter()
        result = load_image(item, max_pixels=options.max_image_pixels, max_bytes=options.max_image_bytes)
        pixels = preprocess(result.image) if isinstance(result, DecodedImage) else None
        return result, pixels, time.perf_counter() - started

    chunk, waiting, seen = _Chunk(), [], {}

    def embed_waiting() -> None:
        if not waiting:
            return
        started = time.perf_counter()
        features = runtime.encoder.encode(torch.stack([p for _, _, p in waiting]))
        encoded = time.perf_counter()
        vectors, scores = runtime.align_and_score(features)
        timings["encode"] += encoded - started
        timings["align_score"] += time.perf_counter() - encoded
        for (item, result, _), v, s in zip(waiting, vectors, scores, strict=True):
            chunk.add(item, result, None)
            chunk.vectors.append(v[None])
            chunk.scores.append(s[None])
        waiting.clear()

    progress = progress_bar(f"ingesting into {record.name}", len(items), options.progress)
    writer = ChunkWriter(db.engine, batch_id=batch_id, monitor_id=record.id, bank_id=record.bank_id,
                         writers=options.store_writers)
    def too_slow(item: SourceItem):
        reason = (f"too slow: decoding took longer than {options.decode_timeout_s:g} s "
                  "(ingest.decode_timeout_s); the batch went on without it")
        return FailedImage(uri=item.uri, reason=reason, sha256=None, n_bytes=None), None, options.decode_timeout_s

    # daemon threads: a decode that overran its deadline must not keep the process from exiting
    readers = DaemonPool(options.decode_threads, name="t2c-decode")
    try:
        with writer, progress as advance:
            depth = max(2 * options.batch_size, 4 * options.decode_threads)
            decoded = _prefetch(readers, decode, items, depth, timeout=options.decode_timeout_s, on_timeout=too_slow)
            for item, (result, pixels, seconds) in zip(items, decoded, strict=True):
                timings["decode"] += seconds
                if isinstance(result, FailedImage):
                    chunk.add(item, result, result.reason)
                elif result.sha256 in seen:
                    chunk.add(item, result, f"duplicate: same content as {seen[result.sha256]}")
                else:
                    seen[result.sha256] = item.uri
                    waiting.append((item, result, pixels))
                    if len(waiting) >= options.batch_size:
                        embed_waiting()
                if len(chunk) >= options.chunk_size:
                    writer.submit(chunk.freeze(dim, k))  # waits while store_writers chunks are being stored
                    chunk = _Chunk()
                    if log:
                        log(f"{record.name}: {len(seen)} images embedded")
                advance(1)
            embed_waiting()
            if len(chunk):
                writer.submit(chunk.freeze(dim, k))
    finally:
        readers.shutdown()
    timings["store"] = writer.seconds
    return timings


def finish_batch(db: Database, batch_id: int, timings: dict[str, float]) -> batch_store.BatchSummary:
    with db.engine.begin() as conn:
        return batch_store.finish_batch(conn, batch_id, timings={k: round(v, 4) for k, v in timings.items()})


def fail_batch(db: Database, batch_id: int, error: BaseException) -> None:
    """Record why a run stopped; a rerun of the batch completes it without duplicates."""
    with db.engine.begin() as conn:
        batch_store.set_status(conn, batch_id, "failed", error=f"run stopped: {type(error).__name__}: {error}"[:2000])


def try_fail_batch(db: Database, batch_id: int, error: BaseException) -> bool:
    """``fail_batch`` when the database lets us, and whether it did; when the database is what
    failed, the batch stays ``embedding`` (a rerun completes it) and the original error is the one
    the caller raises."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        fail_batch(db, batch_id, error)
    except SQLAlchemyError:
        return False
    return True


def ingest(db: Database, monitor: str, source: Any, *, batch_id: str | None = None,
           runtime: MonitorRuntime | None = None, progress: bool = False, **overrides: Any) -> batch_store.BatchSummary:
    """Ingest one batch locally, in this process (``t2c ingest --no-flow``, benchmarks). The ingest
    flow runs the same steps (plan, ingest the items, finish; a failure marks the batch failed) as
    tasks, with retries on I/O and optional Dask shards."""
    started = time.perf_counter()
    runtime = runtime or load_runtime(db, monitor)
    check_source(str(source))
    items = resolve_source(source)
    options = IngestOptions.for_monitor(runtime.record, progress=progress, **overrides)
    plan = plan_batch(db, runtime.record, items, source_uri=str(source), batch_id=batch_id)
    try:
        timings = ingest_items(db, runtime, plan.batch_id, plan.items, options)
    except BaseException as exc:
        try_fail_batch(db, plan.batch_id, exc)
        raise
    timings["total"] = time.perf_counter() - started
    return finish_batch(db, plan.batch_id, timings)
