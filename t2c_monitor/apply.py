"""Apply a monitor: load and cross-check its models, then record it (the use case behind
``t2c monitor apply``, the demo, the benchmarks and the tests).

Recording is idempotent: applying the same file again updates the monitor in place and reuses its
encoder, CLIP model, aligner and bank rows; a changed bank becomes a new bank version.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from t2c_monitor.monitor_models import MonitorModels, load_models
from t2c_monitor.monitors import MonitorConfig, load_monitor_file
from t2c_monitor.store import Database


@dataclass(frozen=True)
class AppliedMonitor:
    """What applying one monitor did (``bank``/``bank_version`` only when it was recorded)."""

    name: str
    concepts: int
    dim: int
    bank: str | None = None
    bank_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def record_models(db: Database, models: MonitorModels) -> AppliedMonitor:
    """Record (or update) a monitor whose models are loaded."""
    from t2c_monitor.store.monitors import get_monitor, record_monitor

    with db.session() as session:
        record_monitor(session, models)
    with db.session() as session:
        record = get_monitor(session, models.config.name)
    return AppliedMonitor(name=record.name, concepts=len(record.concept_names),
                          dim=int(record.concept_vectors.shape[1]), bank=record.bank_name,
                          bank_version=record.bank_version)


def apply_monitor(db: Database | None, config: MonitorConfig, *, device: str | None = None) -> AppliedMonitor:
    """Load the monitor's models (refusing mismatched spaces) and record it; with ``db`` None,
    only check that everything loads. A concept bottleneck model it names must belong to its models."""
    models = load_models(config, device=device)
    if config.cbm is not None:
        from t2c_monitor.cbm.model import ConceptBottleneck

        ConceptBottleneck.load(config.cbm, expect_source=models.encoder.identity, expect_clip=models.clip.identity,
                               expect_aligner=models.aligner)
    if db is None:
        return AppliedMonitor(name=config.name, concepts=models.bank.k, dim=models.bank.dim)
    return record_models(db, models)


def apply_monitor_file(path: str | Path, db: Database | None, *, device: str | None = None,
                       status: Callable[[str], AbstractContextManager[Any]] | None = None) -> list[AppliedMonitor]:
    """Validate a monitors file and apply every monitor in it (``db`` None: check only).
    ``status`` shows what is loading (a rich status spinner in the CLI)."""
    applied = []
    for config in load_monitor_file(path):
        with (status or (lambda _: nullcontext()))(f"loading the models of {config.name}"):
            applied.append(apply_monitor(db, config, device=device))
    return applied
