"""The use cases behind ``t2c search``: concept logic, text search, and the search index.

* ``concept_search``: images of a monitor satisfying every constraint (``search.query``), with the
  count left after each constraint, as the paper's Figure 18.
* ``text_search``: the images nearest a text, through the width's HNSW index when it is built,
  exactly otherwise (or when asked); ``recall=True`` also answers exactly and reports the index's
  recall against it.
* ``build_search_index`` / ``drop_search_index``: the index is built on demand, never by ingestion
  (see ``store.vectors.ensure_hnsw_index`` for why; the README's "Search" section for when).

Bank concepts are read from the database; only free text needs the monitor's CLIP model, loaded
once per call and checked to be the space the monitor recorded.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from t2c_monitor.errors import ConfigError
from t2c_monitor.search.query import Constraint, Corpus
from t2c_monitor.store import Database
from t2c_monitor.store.monitors import MonitorRecord, get_monitor
from t2c_monitor.store.search import Hit


@dataclass(frozen=True)
class LogicResult:
    """A concept-logic query's answer: the count after each constraint and the best hits."""

    monitor: str
    constraints: list[Constraint]
    corpus: Corpus
    counts: list[int]  # corpus size, then after each constraint in order
    means: list[float]
    stds: list[float]
    hits: list[Hit]
    seconds: float
    stats_computed: int  # statistics computed in this call (the rest came from the cache)
    notes: list[str] = field(default_factory=list)

    @property
    def n_matched(self) -> int:
        return self.counts[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor, "corpus": self.corpus.to_dict(),
            "constraints": [c.to_dict() | {"mean": m, "std": s, "left": n}
                            for c, m, s, n in zip(self.constraints, self.means, self.stds, self.counts[1:],
                                                  strict=True)],
            "counts": self.counts, "matched": self.n_matched, "seconds": round(self.seconds, 4),
            "stats_computed": self.stats_computed, "notes": self.notes,
            "hits": [_hit_dict(h, [c.label for c in self.constraints], self.means, self.stds) for h in self.hits],
        }


@dataclass(frozen=True)
class TextResult:
    """A text search's answer: the nearest images, how they were found, and the recall when measured."""

    monitor: str
    text: str
    corpus: Corpus
    hits: list[Hit]
    method: str  # "hnsw" or "exact"
    ef_search: int | None
    seconds: float
    recall: float | None = None
    exact_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor, "text": self.text, "corpus": self.corpus.to_dict(), "method": self.method,
            "ef_search": self.ef_search, "seconds": round(self.seconds, 4), "recall": self.recall,
            "exact_seconds": None if self.exact_seconds is None else round(self.exact_seconds, 4),
            "notes": self.notes,
            "hits": [{"image_id": h.image_id, "uri": h.uri, "batch": h.batch, "similarity": h.similarities[0],
                      "meta": h.meta} for h in self.hits],
        }


def _hit_dict(hit: Hit, labels: list[str], means: list[float], stds: list[float]) -> dict[str, Any]:
    return {"image_id": hit.image_id, "uri": hit.uri, "batch": hit.batch, "meta": hit.meta,
            "rank_score": hit.rank_score,
            "similarities": dict(zip(labels, hit.similarities, strict=True)),
            "z": {label: (s - m) / d if d > 0 else 0.0
                  for label, s, m, d in zip(labels, hit.similarities, means, stds, strict=True)}}


def _record(db: Database, monitor: str) -> MonitorRecord:
    with db.session() as session:
        return get_monitor(session, monitor)


def make_corpus(db: Database, record: MonitorRecord, *, batches: list[str] | tuple[str, ...] = (),
                since: datetime | None = None, until: datetime | None = None,
                where: dict[str, str] | None = None) -> Corpus:
    """The monitor's images narrowed as asked; unknown batch ids are refused with the known ones."""
    from t2c_monitor.store.batches import batch_names

    if since is not None and until is not None and since >= until:
        raise ConfigError(f"--since {since.isoformat()} is not before --until {until.isoformat()}.")
    if batches:
        with db.engine.connect() as conn:
            known = batch_names(conn, record.id)
        unknown = [b for b in batches if b not in known]
        if unknown:
            raise ConfigError(f"Monitor {record.name} has no stored batch {', '.join(map(repr, unknown))}; "
                              f"stored: {', '.join(sorted(known)) or 'none'} (`t2c batches list`).")
    return Corpus(monitor_id=record.id, dim=int(record.clip.dim), batches=tuple(dict.fromkeys(batches)),
                  since=since, until=until, where=dict(where or {}))


def _bank_row(record: MonitorRecord, name: str) -> int:
    from t2c_monitor.concepts.definition import normalise_key

    keys = [normalise_key(n) for n in record.concept_names]
    key = normalise_key(name)
    if key in keys:
        return keys.index(key)
    close = difflib.get_close_matches(name, record.concept_names, n=3)
    raise ConfigError(
        f"Concept {name!r} is not in monitor {record.name}'s bank ({record.bank_name} v{record.bank_version})"
        + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
        + f" For free text write 'text:{name}:+K'. The bank has: {', '.join(record.concept_names)}."
    )


def encode_texts(db: Database, record: MonitorRecord, texts: list[str], *, clip: Any = None) -> np.ndarray:
    """Unit vectors of free texts, encoded with the monitor's CLIP through its bank's templates (as its
    concepts were)."""
    from t2c_monitor.concepts.definition import BankDefinition
    from t2c_monitor.concepts.definition import Concept as ConceptDefinition
    from t2c_monitor.concepts.encode import encode_bank
    from t2c_monitor.decode.monitor import monitor_clip
    from t2c_monitor.store.monitors import bank_templates

    for t in texts:
        if not t.strip() or "\x00" in t:
            raise ConfigError(f"Search text {t!r} is empty or holds a NUL byte.")
    with db.session() as session:
        templates = bank_templates(session, record.bank_id)
    clip = clip or monitor_clip(record)
    definition = BankDefinition(name="search", version=1, templates=templates,
                                concepts=tuple(ConceptDefinition(f"q{i}", (t,)) for i, t in enumerate(texts)))
    return encode_bank(definition, clip).vectors.numpy()


def centred(record: MonitorRecord, vectors: np.ndarray) -> np.ndarray:
    """Query vectors less the mean of the monitor's bank concepts.

    CLIP's text vectors share a large common direction, so an image's raw similarity to any concept
    also measures how much it resembles "a picture" in general: the images most similar to "yellow"
    are partly just images with high similarities to everything. The similarity to ``c - mean(bank)``
    is the raw similarity minus the image's mean similarity over the bank (the inner product is
    linear), so it ranks images by what sets the concept apart. In the shapes world this lifted the
    precision of a colour's top images (z >= 1.5) from 0.5-0.8 to 0.8-0.95 (module doc of
    ``world.search_check``). Standardising per concept afterwards makes the scale irrelevant.
    """
    return (np.asarray(vectors, dtype=np.float32) - np.asarray(record.concept_vectors, dtype=np.float32).mean(0)
            ).astype(np.float32)


def constraint_vectors(db: Database, record: MonitorRecord, constraints: list[Constraint], *,
                       clip: Any = None, raw: bool = False) -> np.ndarray:
    """One vector per constraint: a bank concept's stored vector or free text encoded now, centred on the
    bank's mean concept (``centred``) unless ``raw``."""
    rows: list[np.ndarray | None] = []
    for c in constraints:
        rows.append(None if c.free_text else record.concept_vectors[_bank_row(record, c.concept)])
    free = [c.concept for c in constraints if c.free_text]
    if free:
        encoded = iter(encode_texts(db, record, free, clip=clip))
        rows = [next(encoded) if row is None else row for row in rows]
    vectors = np.stack([np.asarray(r, dtype=np.float32) for r in rows])
    return vectors if raw else centred(record, vectors)


def concept_search(db: Database, monitor: str, constraints: list[Constraint], *, limit: int = 50,
                   batches: list[str] | tuple[str, ...] = (), since: datetime | None = None,
                   until: datetime | None = None, where: dict[str, str] | None = None,
                   clip: Any = None, raw: bool = False) -> LogicResult:
    """Images of ``monitor`` (narrowed by the corpus filters) satisfying every constraint, best first.
    Similarities are to concepts centred on the bank's mean concept (``centred``) unless ``raw``."""
    from t2c_monitor.store.search import concept_logic, corpus_stats

    if limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}.")
    record = _record(db, monitor)
    corpus = make_corpus(db, record, batches=batches, since=since, until=until, where=where)
    vectors = constraint_vectors(db, record, constraints, clip=clip, raw=raw)
    started = time.perf_counter()
    with db.engine.begin() as conn:
        fingerprint, stats, computed = corpus_stats(conn, corpus, vectors)
        if fingerprint.n:
            counts, hits = concept_logic(conn, corpus, constraints, vectors, stats, limit=limit)
        else:
            counts, hits = [0] * (len(constraints) + 1), []
    notes = [] if fingerprint.n else [f"monitor {monitor} has no stored images in the corpus searched "
                                      f"({corpus.describe()}): ingest a batch, or widen the filters"]
    return LogicResult(monitor=monitor, constraints=list(constraints), corpus=corpus, counts=counts,
                       means=[s.mean for s in stats], stds=[s.std for s in stats], hits=hits,
                       seconds=time.perf_counter() - started, stats_computed=computed, notes=notes)


def text_search(db: Database, monitor: str, text_query: str, *, top: int = 20, exact: bool = False,
                recall: bool = False, batches: list[str] | tuple[str, ...] = (), since: datetime | None = None,
                until: datetime | None = None, where: dict[str, str] | None = None,
                clip: Any = None, raw: bool = False) -> TextResult:
    """The ``top`` images of ``monitor`` nearest the text (encoded with the monitor's CLIP; centred on the
    bank's mean concept as ``centred`` says, unless ``raw``)."""
    from t2c_monitor.store.search import nearest
    from t2c_monitor.store.vectors import hnsw_index_exists

    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}.")
    record = _record(db, monitor)
    corpus = make_corpus(db, record, batches=batches, since=since, until=until, where=where)
    query = encode_texts(db, record, [text_query], clip=clip)
    query = (query if raw else centred(record, query))[0]
    notes = []
    with db.engine.connect() as conn:
        if not exact and not hnsw_index_exists(conn, corpus.dim):
            notes.append(f"no search index for width {corpus.dim}: answered exactly "
                         f"(build one with `t2c search --monitor {monitor} --index build`)")
        started = time.perf_counter()
        found = nearest(conn, corpus, query, top, exact=exact)
        seconds = time.perf_counter() - started
        conn.rollback()
        measured, exact_seconds = None, None
        if recall:
            started = time.perf_counter()
            truth = nearest(conn, corpus, query, top, exact=True)
            exact_seconds = time.perf_counter() - started
            conn.rollback()
            measured = recall_at(found.hits, truth.hits)
    if found.method == "exact" and not exact and not notes:
        notes.append("the planner did not use the search index for this corpus: answered exactly")
    return TextResult(monitor=monitor, text=text_query, corpus=corpus, hits=found.hits, method=found.method,
                      ef_search=found.ef_search, seconds=seconds, recall=measured, exact_seconds=exact_seconds,
                      notes=notes)


def recall_at(found: list[Hit], truth: list[Hit]) -> float:
    """The share of the exact answer's images that a search found (1.0 when the exact answer is empty)."""
    if not truth:
        return 1.0
    return len({h.image_id for h in found} & {h.image_id for h in truth}) / len(truth)


@dataclass(frozen=True)
class IndexInfo:
    """A width's search index: its name, whether it exists, its size, and the seconds a build took."""

    monitor: str
    dim: int
    name: str
    exists: bool
    bytes: int
    rows: int
    build_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "dim": self.dim, "name": self.name, "exists": self.exists,
                "bytes": self.bytes, "rows": self.rows, "build_seconds": self.build_seconds}


def search_index(db: Database, monitor: str, *, build: bool = False, drop: bool = False,
                 rebuild: bool = False) -> IndexInfo:
    """The search index of the monitor's width: shown, built (if missing), rebuilt, or dropped.

    The index serves every monitor of that width (it is one partial index of the shared image table).
    """
    from t2c_monitor.store.vectors import drop_hnsw_index, ensure_hnsw_index, hnsw_index_stats

    record = _record(db, monitor)
    dim = int(record.clip.dim)
    seconds = None
    if drop or rebuild:
        with db.engine.begin() as conn:
            drop_hnsw_index(conn, dim)
    if build or rebuild:
        started = time.perf_counter()
        with db.engine.begin() as conn:
            ensure_hnsw_index(conn, dim)
        seconds = time.perf_counter() - started
    with db.engine.connect() as conn:
        stats = hnsw_index_stats(conn, dim)
    return IndexInfo(monitor=monitor, dim=dim, name=stats.name, exists=stats.exists, bytes=stats.bytes,
                     rows=stats.rows, build_seconds=seconds)
