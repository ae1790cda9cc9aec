"""A batch's stored concept scores and aligned vectors, read for baselines, audits and reports, and scores
rewritten when a bank changes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import ARRAY, BigInteger, Connection, all_, bindparam, delete, select, text, update

from t2c_monitor.errors import ConfigError
from t2c_monitor.store.batches import batch_bank
from t2c_monitor.store.copy import read_matrix
from t2c_monitor.store.models import (
    Batch,
    Image,
    ImageScore,
)


def batch_scores(conn: Connection, batch_id: int, bank_id: int) -> np.ndarray:
    """Concept scores ``(n, k)`` of a batch's ok images against one bank: those it was ingested with
    are in the image rows, those against another bank in ``image_score``; by image id."""
    if batch_bank(conn, batch_id) == bank_id:  # else: image_score
        return read_matrix(
            conn,
            "SELECT scores FROM image WHERE batch_id = %(b)s AND status = 'ok' AND scores IS NOT NULL ORDER BY id",
            {"b": batch_id},
        )
    return read_matrix(
        conn,
        "SELECT s.scores FROM image_score s JOIN image i ON i.id = s.image_id "
        "WHERE i.batch_id = %(b)s AND s.bank_id = %(bank)s ORDER BY i.id",
        {"b": batch_id, "bank": bank_id},
    )


def ok_image_ids(conn: Connection, batch_id: int) -> list[int]:
    query = select(Image.id).where(Image.batch_id == batch_id, Image.status == "ok").order_by(Image.id)
    return list(conn.execute(query).scalars().all())


def replace_scores(conn: Connection, batch_id: int, bank_id: int, image_ids: list[int], scores: np.ndarray) -> None:
    """Store a batch's scores against a bank (e.g. a new bank version), replacing any partial set:
    in the image rows for the batch's own bank, else as ``image_score`` rows."""
    from t2c_monitor.store import copy

    if batch_bank(conn, batch_id) == bank_id:  # else: image_score
        conn.execute(update(Image).where(Image.batch_id == batch_id, Image.scores.is_not(None),
                                         Image.id != all_(bindparam("ids", [int(i) for i in image_ids],
                                                                    type_=ARRAY(BigInteger))))
                     .values(scores=None))  # one array parameter, however many images
        conn.execute(
            text("CREATE TEMPORARY TABLE t2c_new_scores (image_id bigint PRIMARY KEY, scores real[]) ON COMMIT DROP")
        )
        copy.copy_into(conn, "t2c_new_scores", [
            copy.int_column("image_id", image_ids, bits=64),
            copy.real_array_column("scores", scores),
        ])
        conn.execute(
            text("UPDATE image i SET scores = n.scores FROM t2c_new_scores n "
                 "WHERE i.id = n.image_id AND i.batch_id = :b"),
            {"b": batch_id},
        )
        conn.execute(text("DROP TABLE t2c_new_scores"))
        return
    conn.execute(delete(ImageScore).where(ImageScore.image_id == Image.id, Image.batch_id == batch_id,
                                          ImageScore.bank_id == bank_id))
    copy.copy_into(conn, "image_score", [
        copy.int_column("image_id", image_ids, bits=64),
        copy.int_column("bank_id", [bank_id] * len(image_ids)),
        copy.real_array_column("scores", scores),
    ])


def batch_embeddings(conn: Connection, batch_id: int) -> np.ndarray:
    """Aligned unit vectors ``(n, d)`` of a batch's ok images, less those whose vector retention dropped
    (``(0, 0)`` when none is left; ``ConfigError`` when the batch holds vectors of several widths: images
    ingested under another aligner or CLIP model)."""
    try:
        return read_matrix(conn, "SELECT embedding FROM image WHERE batch_id = %(b)s AND embedding IS NOT NULL "
                                 "ORDER BY id", {"b": batch_id})
    except ValueError as exc:
        if "different lengths" not in str(exc):
            raise
        name = conn.execute(select(Batch.external_id).where(Batch.id == batch_id)).scalar()
        raise ConfigError(
            f"Batch {name} holds aligned vectors of different widths: some of its images were ingested with "
            "another aligner or CLIP model than the rest, so they are not comparable. Ingest the images again "
            "under a new batch id (`t2c ingest SOURCE --monitor NAME --batch-id NEW`) and leave this batch out."
        ) from None


def window_embeddings(conn: Connection, batch_ids: Sequence[int], dim: int) -> np.ndarray:
    """The aligned vectors ``(n, dim)`` of the batches' ok images that still have one (retention may have
    dropped some or all: ``n`` may be below the images' count, or 0)."""
    kept = [m for m in (batch_embeddings(conn, b) for b in batch_ids) if m.size]
    return np.concatenate(kept) if kept else np.zeros((0, dim), np.float32)


def sample_embeddings(conn: Connection, batch_ids: list[int], limit: int) -> np.ndarray:
    """Up to ``limit`` aligned vectors of the batches' ok images, a fixed pseudo-random choice (the same
    rows every time: ordered by a hash of the image id)."""
    return read_matrix(
        conn, "SELECT embedding FROM image WHERE batch_id = ANY(%(b)s) AND embedding IS NOT NULL "
              "ORDER BY md5(id::text) LIMIT %(n)s", {"b": list(batch_ids), "n": int(limit)},
    )
