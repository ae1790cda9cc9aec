"""The retention use case (``t2c retention apply``, and the retention deployment of ``t2c serve``): drop the
aligned vectors of images older than each monitor's ``retention.vectors`` (or a given age), keeping their
rows, concept scores, batches, baselines and audits (``store.retention`` says what is kept and why)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from t2c_monitor.errors import ConfigError
from t2c_monitor.progress import progress_bar
from t2c_monitor.store import Database


@dataclass(frozen=True)
class RetentionOutcome:
    """What retention did to one monitor (or would do: ``dry_run``)."""

    monitor: str
    keep: timedelta | None  # vectors newer than this are kept; None: the monitor keeps them all
    cutoff: datetime | None
    dropped: int  # images whose vector was dropped by this run (to be dropped, in a dry run)
    vector_bytes: int  # the size of those vectors
    oldest: datetime | None  # the oldest such image's storage time
    dry_run: bool
    table_bytes_before: int
    table_bytes_after: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["keep"] = None if self.keep is None else self.keep.total_seconds()
        for key in ("cutoff", "oldest"):
            out[key] = None if out[key] is None else out[key].isoformat()
        return out


def apply_retention(db: Database, monitors: list[str] | None = None, *, older_than: timedelta | None = None,
                    dry_run: bool = False, vacuum: bool = True, chunk: int = 5000, now: datetime | None = None,
                    progress: bool = False, log: Callable[[str], None] = lambda _: None) -> list[RetentionOutcome]:
    """Apply retention to the named monitors (all recorded ones by default). ``older_than`` overrides
    each monitor's ``retention.vectors``; a monitor with neither keeps its vectors (and is reported so)."""
    from t2c_monitor.store import retention as store
    from t2c_monitor.store.monitors import get_monitor, list_monitors

    if older_than is not None and older_than < timedelta(days=1):
        raise ConfigError("Retention keeps vectors at least 1d (audits and searches of recent images need them): "
                          "give --older-than 1d or more.")
    now = now or datetime.now(UTC)
    with db.session() as session:
        names = monitors or [m.name for m in list_monitors(session)]
        records = [get_monitor(session, n) for n in names]
    outcomes = []
    for record in records:
        keep = older_than or record.config.retention.vectors
        started = time.perf_counter()
        with db.engine.connect() as conn:
            before = store.image_table_bytes(conn)
            usage = store.droppable_vectors(conn, record.id, now - keep) if keep else None
        dropped = 0
        if usage and usage.images and not dry_run:
            with progress_bar(f"dropping vectors of {record.name}", usage.images, progress) as advance:
                while True:
                    with db.engine.begin() as conn:
                        n = store.drop_vectors(conn, record.id, now - keep, limit=chunk)
                    if not n:
                        break
                    dropped += n
                    advance(n)
            if vacuum:
                store.vacuum_images(db.engine)
        with db.engine.connect() as conn:
            after = store.image_table_bytes(conn)
        outcome = RetentionOutcome(
            monitor=record.name, keep=keep, cutoff=now - keep if keep else None,
            dropped=usage.images if (usage and dry_run) else dropped,
            vector_bytes=usage.vector_bytes if usage else 0, oldest=usage.oldest if usage else None,
            dry_run=dry_run, table_bytes_before=before, table_bytes_after=after,
            seconds=round(time.perf_counter() - started, 3))
        log(describe(outcome))
        outcomes.append(outcome)
    return outcomes


def describe(outcome: RetentionOutcome) -> str:
    """One line for people: what was (or would be) dropped, and what stays."""
    if outcome.keep is None:
        return (f"{outcome.monitor}: keeps every vector (set retention: {{vectors: 90d}} in its monitor file, "
                "or pass --older-than)")
    from t2c_monitor.durations import format_duration

    verb = "would drop" if outcome.dry_run else "dropped"
    return (f"{outcome.monitor}: {verb} the vectors of {outcome.dropped} images stored before "
            f"{outcome.cutoff:%Y-%m-%d %H:%M} UTC (older than {format_duration(outcome.keep)}; "
            f"{outcome.vector_bytes / 1e6:.1f} MB); their scores, batches and audits stay")
