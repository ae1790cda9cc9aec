"""A concept-based dataset report (the paper's dataset summary, Section 5.2): what a set of stored
images contains, in the monitor's concepts, against its baseline.

* **presence**: for each concept, the share of the dataset's images that express it at least as
  much as the baseline's top 10% do (10% when the dataset is like the baseline): the concepts most
  and least present, with how far that is from the baseline;
* per concept that differs most: baseline against dataset score distributions, and the dataset's
  images at the top and at the bottom of that concept;
* by label, when the images' manifest gave one (a ``label`` or ``class`` column): the concepts
  that go with each class most (mean score in baseline standard deviations);
* the dataset's mean direction against the baseline, in words;
* the images most unlike the baseline (farthest from its mean in its principal components,
  noise-scaled as the audit's vector test measures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from t2c_monitor.errors import ConfigError
from t2c_monitor.reports import charts
from t2c_monitor.reports.render import render, write_atomically
from t2c_monitor.reports.thumbnails import Thumb, top_images
from t2c_monitor.store import Database

TOP_SHARE = 0.1
SHOWN_CONCEPTS = 6
LABEL_KEYS = ("label", "class")


@dataclass(frozen=True)
class ConceptPresence:
    name: str
    share: float  # of dataset images at or above the baseline's top-10% score
    shift: float  # mean score against the baseline, in baseline SDs


@dataclass(frozen=True)
class ConceptDetail:
    name: str
    chart: str | None
    top: list[Thumb]
    bottom: list[Thumb]


@dataclass(frozen=True)
class DatasetReport:
    monitor: str
    batches: list[str]
    n_images: int
    n_baseline: int
    most: list[ConceptPresence]
    least: list[ConceptPresence]
    chart: str | None
    details: list[ConceptDetail]
    by_label: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    words: Any = None  # decode.drift.DriftWords
    unlike: list[Thumb] = field(default_factory=list)
    generated: str = ""


@dataclass(frozen=True)
class DatasetReportFiles:
    html: Path

    def to_dict(self) -> dict[str, str]:
        return {"html": str(self.html)}


class _Concept:  # what charts.distributions draws: a name, a column, a direction
    def __init__(self, name: str, index: int, direction: int) -> None:
        self.name, self.index, self.direction = name, index, direction


def dataset_report(db: Database, monitor: str, *, batches: list[str] | None = None, since: datetime | None = None,
                   until: datetime | None = None) -> DatasetReport:
    """The concept summary of the monitor's stored batches (named, or received in [since, until))."""
    from t2c_monitor.audit import batch_scores
    from t2c_monitor.decode.drift import drift_words
    from t2c_monitor.drift.roots import whitened_space
    from t2c_monitor.store import alerts as report_store
    from t2c_monitor.store import audits as audit_store
    from t2c_monitor.store import baselines as baseline_store
    from t2c_monitor.store import scores as score_store
    from t2c_monitor.store.monitors import get_monitor

    if batches is None and since is None and until is None:
        raise ConfigError("Say which images: --batches ID[,ID...] or --since/--window.")
    with db.session() as session:
        record = get_monitor(session, monitor)
    with db.engine.connect() as conn:
        chosen = audit_store.stored_batches(conn, record.id, external_ids=batches, since=since, until=until)
        if not chosen:
            raise ConfigError(f"No stored batches of {monitor} match: `t2c batches list --monitor {monitor}`.")
        baseline = baseline_store.active_baseline(conn, record.id, monitor)
        ids = [i for b, _ in chosen for i in score_store.ok_image_ids(conn, b)]
        vectors = score_store.window_embeddings(conn, [b for b, _ in chosen], baseline.mean_vector.shape[0])
        if vectors.shape[0] != len(ids):
            raise ConfigError(f"Retention dropped the vectors of {len(ids) - vectors.shape[0]} images of these "
                              f"batches of {monitor}; a dataset report needs every image's vector. Choose batches "
                              "stored within the monitor's retention.vectors.")
        uris = report_store.image_uris(conn, ids)
        metas = report_store.image_meta(conn, ids)
    if baseline.bank_id != record.bank_id:
        raise ConfigError(f"The baseline of {monitor} belongs to another bank version: build a new one with "
                          f"`t2c baseline build --monitor {monitor}` first.")
    scores = np.concatenate([batch_scores(db, record, b) for b, _ in chosen])
    if scores.shape[0] == 0:
        raise ConfigError(f"The chosen batches of {monitor} hold no stored image.")
    names, ref = record.concept_names, baseline.sorted_scores
    n_ref = ref.shape[1]
    threshold = ref[:, min(int((1 - TOP_SHARE) * n_ref), n_ref - 1)]
    share = (scores >= threshold).mean(axis=0)
    std = ref.std(axis=1, ddof=1)
    shift = (scores.mean(axis=0) - ref.mean(axis=1)) / np.where(std > 0, std, 1.0)
    order = np.argsort(-share)
    presence = [ConceptPresence(names[j], float(share[j]), float(shift[j])) for j in order]
    differ = sorted(range(len(names)), key=lambda j: -abs(share[j] - TOP_SHARE))[:SHOWN_CONCEPTS]
    window_uris = [uris.get(i, "") for i in ids]
    details = [ConceptDetail(
        name=names[j],
        chart=charts.distributions([_Concept(names[j], j, 1 if share[j] >= TOP_SHARE else -1)], ref, scores,
                                   label="these images"),
        top=top_images(scores[:, j], window_uris), bottom=top_images(scores[:, j], window_uris, lowest=True))
        for j in differ]
    chart_rows = sorted(differ + [j for j in order[:10] if j not in differ], key=lambda j: -share[j])
    by_label: dict[str, list[tuple[str, float]]] = {}
    labels = [next((str(metas.get(i, {}).get(k)) for k in LABEL_KEYS if metas.get(i, {}).get(k) is not None), None)
              for i in ids]
    z = (scores - ref.mean(axis=1)) / np.where(std > 0, std, 1.0)
    for label in sorted({lab for lab in labels if lab is not None}):
        rows = np.array([lab == label for lab in labels])
        means = z[rows].mean(axis=0)
        by_label[label] = [(names[j], float(means[j])) for j in np.argsort(-means)[:3]]
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    direction = unit.mean(axis=0) - baseline.mean_vector
    try:
        words = drift_words(record, direction=direction, baseline_mean=baseline.mean_vector)
    except Exception:  # noqa: BLE001 - a decoder that cannot load costs the words, never the report
        words = None
    sample = baseline.vectors
    if sample is None:
        with db.engine.connect() as conn:
            sample = score_store.sample_embeddings(conn, baseline.batch_ids, record.config.audit.vectors)
    unlike: list[Thumb] = []
    if sample.shape[0] >= 40:
        space = whitened_space(sample.astype(np.float64), 64)
        distance = np.linalg.norm(space.whiten((unit - space.mean).T), axis=0)
        unlike = top_images(distance, window_uris)
    return DatasetReport(
        monitor=monitor, batches=[e for _, e in chosen], n_images=int(scores.shape[0]), n_baseline=n_ref,
        most=presence[:10], least=presence[::-1][:10],
        chart=charts.presence([names[j] for j in chart_rows], [float(share[j] - TOP_SHARE) for j in chart_rows],
                              title=f"Share of images at or above the baseline's top {TOP_SHARE:.0%}, minus "
                                    f"{TOP_SHARE:.0%}", xlabel="share of images above the baseline's top 10%, "
                                                               "minus the baseline's 10%"),
        details=details, by_label=by_label, words=words, unlike=unlike,
        generated=f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")


def write_dataset_report(report_dir: Path, report: DatasetReport, name: str | None = None) -> DatasetReportFiles:
    stem = name or f"dataset-{datetime.now():%Y%m%dT%H%M%S}"
    path = Path(report_dir) / report.monitor / "datasets" / f"{stem}.html"
    return DatasetReportFiles(html=write_atomically(path, render("dataset.html.j2", report=report,
                                                                 top_share=TOP_SHARE)))
