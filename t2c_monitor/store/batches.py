"""Batch rows: created once per (monitor, batch id), their status, and their summary.

A batch's counts are always recomputed from its image rows, so reruns, resumed runs and several
shards writing one batch agree on them.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from t2c_monitor.store.models import Batch, BatchStatus, Image


@dataclass(frozen=True)
class BatchSummary:
    id: int
    external_id: str
    status: BatchStatus
    n_images: int
    n_ok: int
    n_failed: int
    failures: dict[str, int] = field(default_factory=dict)  # reason category -> count
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def open_batch(conn: Connection, *, monitor_id: int, external_id: str, source_uri: str,
               bank_id: int | None = None) -> tuple[int, str]:
    """The batch row for (monitor, external id), created if new with ``bank_id`` (the monitor's bank
    now: the one its images' ``image.scores`` are against); returns (id, status before this run).
    A reopened batch keeps its bank (``store.images`` stores scores against another apart)."""
    row = conn.execute(
        pg_insert(Batch).values(monitor_id=monitor_id, external_id=external_id, source_uri=source_uri,
                                bank_id=bank_id)
        .on_conflict_do_nothing(index_elements=[Batch.monitor_id, Batch.external_id])
        .returning(Batch.id, Batch.status)
    ).one_or_none()
    if row is None:
        row = conn.execute(select(Batch.id, Batch.status)
                           .where(Batch.monitor_id == monitor_id, Batch.external_id == external_id)).one()
    return int(row.id), str(row.status)


def batch_bank(conn: Connection, batch_id: int) -> int | None:
    """The bank the batch's ``image.scores`` are against (None: not set yet, or no such batch)."""
    return conn.execute(select(Batch.bank_id).where(Batch.id == batch_id)).scalar_one_or_none()


def set_status(conn: Connection, batch_id: int, status: BatchStatus, *, error: str | None = None) -> None:
    conn.execute(update(Batch).where(Batch.id == batch_id).values(status=status, error=error))


def stored_uris(conn: Connection, batch_id: int) -> set[str]:
    return set(conn.execute(select(Image.uri).where(Image.batch_id == batch_id)).scalars())


def uris_held(conn: Connection, monitor_id: int, external_id: str, uris: list[str]) -> set[str]:
    """Which of ``uris`` the monitor already holds: in another batch, or in batch ``external_id``
    once it is stored (an unfinished one is still to be completed)."""
    query = (select(Image.uri).distinct().join(Batch, Batch.id == Image.batch_id)
             .where(Batch.monitor_id == monitor_id,
                    or_(Batch.external_id != external_id, Batch.status == "stored"),
                    Image.uri.in_(list(uris))))
    return set(conn.execute(query).scalars())


INBOX_PREFIX = "inbox-"  # the external ids of the batches an inbox run makes (``ingest.inbox_batch_id``)
_INBOX_LOCK = 0x7432  # the advisory-lock class of inbox runs; the second key is the monitor's id


@contextmanager
def inbox_lock(engine: Engine, monitor_id: int) -> Iterator[bool]:
    """Try to hold the monitor's inbox for the ``with`` block; yields whether it is held. A session lock on a
    connection of its own: a run that is killed or loses the database releases it with its session."""
    with engine.connect() as conn:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:c, :m)"),
                                 {"c": _INBOX_LOCK, "m": monitor_id}).scalar_one())
        conn.commit()
        try:
            yield held
        finally:
            if held and not conn.closed and not conn.invalidated:
                with contextlib.suppress(DBAPIError):
                    conn.execute(text("SELECT pg_advisory_unlock(:c, :m)"), {"c": _INBOX_LOCK, "m": monitor_id})
                    conn.commit()


def interrupted_inbox_batches(conn: Connection, monitor_id: int, *, current: str) -> list[int]:
    """Inbox batches of earlier intervals that a run left unfinished (killed: ``pending``/``embedding``) or
    failed with images stored: their rows are to be counted and kept, their other files are new again."""
    return list(conn.execute(
        select(Batch.id).where(
            Batch.monitor_id == monitor_id, Batch.external_id.startswith(INBOX_PREFIX, autoescape=True),
            Batch.external_id != current, Batch.status != "stored",
            or_(Batch.status.in_(("pending", "embedding")),
                select(Image.id).where(Image.batch_id == Batch.id, Image.status == "ok").exists()))
        .order_by(Batch.id)).scalars())


def _failure_counts(conn: Connection, batch_id: int) -> dict[str, int]:
    category = func.split_part(Image.failure_reason, ":", 1).label("category")
    n = func.count().label("n")
    reasons = conn.execute(select(category, n).where(Image.batch_id == batch_id, Image.status == "failed")
                           .group_by(category).order_by(n.desc(), category)).all()
    return {r.category: int(r.n) for r in reasons}


def finish_batch(conn: Connection, batch_id: int, *, timings: dict[str, float]) -> BatchSummary:
    """Recount the batch from its images and mark it ``stored``, or ``failed`` when no image is ok."""
    n_ok, n_failed = conn.execute(
        select(func.count().filter(Image.status == "ok"), func.count().filter(Image.status == "failed"))
        .where(Image.batch_id == batch_id)
    ).one()
    failures = _failure_counts(conn, batch_id)
    status = "stored" if n_ok else "failed"
    error = None
    if not n_ok:
        counted = Counter(failures)
        error = "every image failed: " + ", ".join(f"{n} {cat}" for cat, n in counted.most_common()) if counted \
            else "the batch holds no images"
    external_id = conn.execute(
        update(Batch).where(Batch.id == batch_id)
        .values(status=status, n_images=n_ok + n_failed, n_ok=n_ok, n_failed=n_failed, timings=timings,
                error=error, finished_at=func.now())
        .returning(Batch.external_id)
    ).scalar_one()
    return BatchSummary(id=batch_id, external_id=external_id, status=status, n_images=n_ok + n_failed,
                        n_ok=n_ok, n_failed=n_failed, failures=failures, timings=timings, error=error)


@dataclass(frozen=True)
class BatchRow:
    """One batch as `t2c batches list` shows it."""

    id: int
    external_id: str
    status: BatchStatus
    source_uri: str
    received_at: datetime
    finished_at: datetime | None
    n_images: int
    n_ok: int
    n_failed: int
    error: str | None
    n_stored: int  # image rows stored so far (an unfinished batch's progress)


def list_batches(conn: Connection, monitor_id: int, *, limit: int = 20,
                 status: BatchStatus | None = None) -> list[BatchRow]:
    """The monitor's latest batches (of one status, or all), newest first."""
    stored = select(func.count()).select_from(Image).where(Image.batch_id == Batch.id).scalar_subquery()
    query = select(Batch.id, Batch.external_id, Batch.status, Batch.source_uri, Batch.received_at,
                   Batch.finished_at, Batch.n_images, Batch.n_ok, Batch.n_failed, Batch.error,
                   stored.label("n_stored"))
    query = query.where(Batch.monitor_id == monitor_id)
    if status is not None:
        query = query.where(Batch.status == status)
    rows = conn.execute(query.order_by(Batch.received_at.desc(), Batch.id.desc()).limit(limit)).all()
    return [BatchRow(**r._mapping) for r in rows]


def batch_names(conn: Connection, monitor_id: int) -> set[str]:
    """The external ids of every batch of the monitor, whatever its status."""
    return set(conn.execute(select(Batch.external_id).where(Batch.monitor_id == monitor_id)).scalars())
