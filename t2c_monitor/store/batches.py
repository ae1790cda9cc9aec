"""Batch rows: created once per (monitor, batch id), their status, and their summary.

A batch's counts are always recomputed from its image rows, so reruns, resumed runs and several
shards writing one batch agree on them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from t2c_monitor.store.models import BatchStatus


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
        text(
            "INSERT INTO batch (monitor_id, external_id, source_uri, bank_id) VALUES (:m, :e, :s, :bank) "
            "ON CONFLICT (monitor_id, external_id) DO NOTHING RETURNING id, status"
        ),
        {"m": monitor_id, "e": external_id, "s": source_uri, "bank": bank_id},
    ).one_or_none()
    if row is None:
        row = conn.execute(
            text("SELECT id, status FROM batch WHERE monitor_id = :m AND external_id = :e"),
            {"m": monitor_id, "e": external_id},
        ).one()
    return int(row.id), str(row.status)


def batch_bank(conn: Connection, batch_id: int) -> int | None:
    """The bank the batch's ``image.scores`` are against (None: not set yet, or no such batch)."""
    return conn.execute(text("SELECT bank_id FROM batch WHERE id = :b"), {"b": batch_id}).scalar_one_or_none()


def set_status(conn: Connection, batch_id: int, status: BatchStatus, *, error: str | None = None) -> None:
    conn.execute(
        text("UPDATE batch SET status = :s, error = :e WHERE id = :id"), {"s": status, "e": error, "id": batch_id}
    )


def stored_uris(conn: Connection, batch_id: int) -> set[str]:
    return set(conn.execute(text("SELECT uri FROM image WHERE batch_id = :b"), {"b": batch_id}).scalars())


def uris_held(conn: Connection, monitor_id: int, external_id: str, uris: list[str]) -> set[str]:
    """Which of ``uris`` the monitor already holds: in another batch, or in batch ``external_id``
    once it is stored (an unfinished one is still to be completed)."""
    return set(conn.execute(
        text("SELECT DISTINCT i.uri FROM image i JOIN batch b ON b.id = i.batch_id WHERE b.monitor_id = :m "
             "AND (b.external_id <> :e OR b.status = 'stored') AND i.uri = ANY(:uris)"),
        {"m": monitor_id, "e": external_id, "uris": list(uris)},
    ).scalars())


def _failure_counts(conn: Connection, batch_id: int) -> dict[str, int]:
    reasons = conn.execute(
        text("SELECT split_part(failure_reason, ':', 1) AS category, count(*) AS n FROM image "
             "WHERE batch_id = :b AND status = 'failed' GROUP BY 1 ORDER BY 2 DESC, 1"),
        {"b": batch_id},
    ).all()
    return {r.category: int(r.n) for r in reasons}


def finish_batch(conn: Connection, batch_id: int, *, timings: dict[str, float]) -> BatchSummary:
    """Recount the batch from its images and mark it ``stored``, or ``failed`` when no image is ok."""
    n_ok, n_failed = conn.execute(
        text("SELECT count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status = 'failed') "
             "FROM image WHERE batch_id = :b"),
        {"b": batch_id},
    ).one()
    failures = _failure_counts(conn, batch_id)
    status = "stored" if n_ok else "failed"
    error = None
    if not n_ok:
        counted = Counter(failures)
        error = "every image failed: " + ", ".join(f"{n} {cat}" for cat, n in counted.most_common()) if counted \
            else "the batch holds no images"
    row = conn.execute(
        text(
            "UPDATE batch SET status = :status, n_images = :n, n_ok = :ok, n_failed = :failed, "
            "timings = CAST(:timings AS jsonb), error = :error, finished_at = now() WHERE id = :id "
            "RETURNING external_id"
        ),
        {"status": status, "n": n_ok + n_failed, "ok": n_ok, "failed": n_failed, "error": error, "id": batch_id,
         "timings": json.dumps(timings)},
    ).one()
    return BatchSummary(id=batch_id, external_id=row.external_id, status=status, n_images=n_ok + n_failed,
                        n_ok=n_ok, n_failed=n_failed, failures=failures, timings=timings, error=error)

