"""Retention: dropping the aligned vectors of old images while their rows, scores and audits stay.

A 512-d vector is 2,056 B of the 2,949 B an image takes with its indexes (``bench/scale.py``), so the
vectors are what grows a monitor's database; 100 concept scores (what audits test and dashboards plot)
take 424 B.
An image loses its vector (``embedding`` NULL, ``embedding_dropped_at`` set) when it was stored
(``created_at``) before the cutoff, unless its batch is in the monitor's active baseline. Each chunk
of images is one short transaction (no long lock on a busy table; a run stopped half-way is finished by
the next), and ``VACUUM`` afterwards lets PostgreSQL reuse the space for new rows (the table file
does not shrink: ``VACUUM FULL`` would, but locks the table for its whole run).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, text

_OLD = """
    i.monitor_id = :monitor_id AND i.created_at < :cutoff AND i.embedding IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM baseline bl WHERE bl.monitor_id = i.monitor_id AND bl.active
                    AND bl.batch_ids @> to_jsonb(i.batch_id))"""


@dataclass(frozen=True)
class VectorUsage:
    """The vectors that retention would drop (or dropped): how many, their size, the oldest image's time."""

    images: int
    vector_bytes: int
    oldest: datetime | None


def droppable_vectors(conn: Connection, monitor_id: int, cutoff: datetime) -> VectorUsage:
    row = conn.execute(text(f"SELECT count(*) AS n, coalesce(sum(pg_column_size(i.embedding)), 0) AS bytes, "
                            f"min(i.created_at) AS oldest FROM image i WHERE {_OLD}"),
                       {"monitor_id": monitor_id, "cutoff": cutoff}).one()
    return VectorUsage(images=int(row.n), vector_bytes=int(row.bytes), oldest=row.oldest)


def drop_vectors(conn: Connection, monitor_id: int, cutoff: datetime, *, limit: int) -> int:
    """Drop up to ``limit`` old vectors (oldest ids first); returns how many were dropped."""
    return conn.execute(text(
        "UPDATE image SET embedding = NULL, embedding_dropped_at = now() WHERE id IN ("
        f"SELECT i.id FROM image i WHERE {_OLD} ORDER BY i.id LIMIT :limit FOR UPDATE SKIP LOCKED)"),
        {"monitor_id": monitor_id, "cutoff": cutoff, "limit": limit}).rowcount


def vacuum_images(engine: Engine) -> None:
    """``VACUUM (ANALYZE) image``: the dropped vectors' space becomes reusable, and the planner's
    statistics follow (VACUUM runs outside a transaction, so on a connection of its own)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) image"))


def image_table_bytes(conn: Connection) -> int:
    """The image table's size on disk with its TOAST table and indexes."""
    return int(conn.execute(text("SELECT pg_total_relation_size('image')")).scalar_one())
