"""Baselines and drift audits of a monitor, concept by concept.

``build_baseline`` samples the concept scores of reference batches (a uniform reservoir, so a
baseline built from many batches weighs every image alike) and the mean aligned vector, and
stores the sample sorted per concept. ``run_audit`` compares a window of batches with the active
baseline through ``drift.KSDriftDetector`` (KS per concept, Benjamini-Hochberg across the bank,
minimum effect sizes), then explains the shift (``drift.explain_shift``: the roots among the
flagged concepts and the echoes that move with them, a test of the aligned vectors themselves,
and drift no concept names) and puts it in words (``decode.drift_words``). It stores every
concept's result, the explanation, the words and the drift direction (window mean minus baseline
mean of aligned vectors), and returns the roots first. A baseline belongs to one aligner and one
bank version: an audit of a monitor whose aligner or bank changed since is refused until a new
baseline is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from t2c_monitor.cbm.shift import EvidenceShift
from t2c_monitor.decode.drift import DriftWords
from t2c_monitor.drift import (
    ConceptDrift,
    KSDriftDetector,
    Reservoir,
    SortedReference,
    drift_direction,
)
from t2c_monitor.drift.roots import ShiftExplanation, explain_shift
from t2c_monitor.durations import format_duration
from t2c_monitor.errors import ConfigError, NothingToAudit
from t2c_monitor.monitors import AuditConfig
from t2c_monitor.store import Database
from t2c_monitor.store import alerts as alert_store
from t2c_monitor.store import audits as audit_store
from t2c_monitor.store import baselines as baseline_store
from t2c_monitor.store import scores as score_store
from t2c_monitor.store.monitors import MonitorRecord, get_monitor


def batch_scores(db: Database, record: MonitorRecord, batch_id: int) -> np.ndarray:
    """A batch's concept scores against the monitor's current bank.

    Images ingested before the bank changed have no scores against it: they are scored now from
    their stored aligned vectors (a matrix product) and the scores stored for the next audit.
    """
    with db.engine.connect() as conn:
        scores = score_store.batch_scores(conn, batch_id, record.bank_id)
        image_ids = score_store.ok_image_ids(conn, batch_id)
        if scores.shape[0] == len(image_ids):
            return scores
        embeddings = score_store.batch_embeddings(conn, batch_id)
    if embeddings.shape[0] != len(image_ids):
        raise ConfigError(
            f"{len(image_ids) - embeddings.shape[0]} images of a batch of {record.name} have no scores against its "
            "current bank and retention dropped their vectors, so they cannot be scored again: audit windows "
            "ingested after the bank changed, or keep vectors longer (retention.vectors).")
    import torch

    from t2c_monitor.scoring import cosine_scores

    scores = cosine_scores(torch.from_numpy(embeddings), torch.tensor(record.concept_vectors), device="cpu").numpy()
    with db.engine.begin() as conn:
        score_store.replace_scores(conn, batch_id, record.bank_id, image_ids, scores)
    return scores


@dataclass(frozen=True)
class BaselineSummary:
    id: int
    monitor: str
    batches: list[str]
    n_images: int
    n_sampled: int
    concepts: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def build_baseline(db: Database, monitor: str, *, batches: list[str] | None = None, last: int | None = None,
                   reservoir_size: int | None = None, seed: int = 0) -> BaselineSummary:
    """Build and activate a baseline from the named batches (or the ``last`` K, or all stored ones),
    keeping ``reservoir_size`` scores per concept (default: the monitor's ``audit.reservoir``)."""
    with db.session() as session:
        record = get_monitor(session, monitor)
    reservoir_size = record.config.audit.reservoir if reservoir_size is None else reservoir_size
    if reservoir_size < 20:
        raise ValueError(f"reservoir_size must be at least 20 scores per concept, got {reservoir_size}")
    with db.engine.connect() as conn:
        chosen = audit_store.stored_batches(conn, record.id, external_ids=batches, last=last)
        if not chosen:
            raise ConfigError(f"Monitor {monitor} has no stored batches to build a baseline from: ingest reference "
                              "images first (for example a sample of the training set).")
    reservoir = Reservoir(reservoir_size, seed=seed)
    vector_sample = Reservoir(record.config.audit.vectors, seed=seed + 1)
    vector_sum, n_images, n_vectors = None, 0, 0
    for batch_id, _ in chosen:
        scores = batch_scores(db, record, batch_id)
        if scores.size:
            reservoir.add(scores)
            n_images += scores.shape[0]
        with db.engine.connect() as conn:
            embeddings = score_store.batch_embeddings(conn, batch_id)
        if embeddings.size:  # none for images whose vectors retention dropped (their scores still count)
            vector_sample.add(embeddings)
            total = embeddings.astype(np.float64).sum(axis=0)
            vector_sum = total if vector_sum is None else vector_sum + total
            n_vectors += embeddings.shape[0]
    if n_images < 20:
        raise ConfigError(f"The reference batches of {monitor} hold {n_images} stored images; a baseline needs at "
                          "least 20 (a few thousand give stable audits).")
    if n_vectors == 0:
        raise ConfigError(f"Retention dropped every aligned vector of the reference batches of {monitor} "
                          f"({', '.join(e for _, e in chosen)}): a baseline needs their mean vector for root causes "
                          "and words. Choose batches stored within the retention period (`t2c batches list`).")
    sample = reservoir.sample()
    sorted_scores = np.sort(np.ascontiguousarray(sample.T), axis=1)  # one contiguous row per concept
    with db.engine.begin() as conn:
        baseline_id = baseline_store.insert_baseline(
            conn, monitor_id=record.id, aligner_id=record.aligner_id, bank_id=record.bank_id,
            batch_ids=[b for b, _ in chosen], n_images=n_images, reservoir_size=reservoir_size,
            mean_vector=(vector_sum / n_vectors).astype(np.float32), sorted_scores=sorted_scores,
            vectors=vector_sample.sample(),
        )
    return BaselineSummary(id=baseline_id, monitor=monitor, batches=[e for _, e in chosen], n_images=n_images,
                           n_sampled=sample.shape[0], concepts=sample.shape[1])


FLAGGED_FIELDS = ("name", "rank", "direction", "ks_stat", "q_value", "effect", "effect_size", "mean_ref", "mean_cur")


def flagged_dict(concept: ConceptDrift) -> dict[str, Any]:
    """A flagged concept as JSON carries it (a baseline with no spread gives an infinite effect
    size, and strict JSON has no infinity: None)."""
    out = {k: getattr(concept, k) for k in FLAGGED_FIELDS}
    for key in ("ks_stat", "q_value", "effect", "mean_ref", "mean_cur"):
        out[key] = float(out[key])
    out["direction"] = int(out["direction"])
    out["effect_size"] = float(out["effect_size"]) if np.isfinite(out["effect_size"]) else None
    return out


@dataclass(frozen=True)
class AuditSummary:
    id: int
    monitor: str
    baseline_id: int
    batches: list[str]
    n_baseline: int
    n_current: int
    flagged: list[ConceptDrift] = field(default_factory=list)  # ranked, largest effect first
    direction_norm: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    since: datetime | None = None
    until: datetime | None = None
    report: str | None = None
    explanation: ShiftExplanation | None = None  # roots, echoes, vector test, unlisted drift
    words: DriftWords | None = None  # the drift in words, when the audit found a shift
    note: str | None = None  # why there is no explanation or no words
    report_error: str | None = None  # why the report could not be written
    evidence: EvidenceShift | None = None  # each class's concept evidence, when the monitor names a CBM

    @property
    def roots(self) -> list[ConceptDrift]:
        """The flagged concepts that explain the shift, first the one that explains most alone (all
        flagged concepts when no explanation could be made)."""
        if self.explanation is None:
            return list(self.flagged)
        by_name = {c.name: c for c in self.flagged}
        return [by_name[r.name] for r in self.explanation.roots if r.name in by_name]

    @property
    def echoes(self) -> dict[str, str]:
        """Flagged concept -> the root it moves with."""
        return dict(self.explanation.echoes) if self.explanation else {}

    @property
    def unlisted(self) -> bool:
        """Whether part of the shift is something no concept of the bank names."""
        return bool(self.explanation and self.explanation.unlisted)

    @property
    def found_shift(self) -> bool:
        return bool(self.flagged) or self.unlisted

    def window_text(self) -> str:
        if self.since or self.until:
            start = f"{self.since:%Y-%m-%d %H:%M %Z}" if self.since else "the first batch"
            end = f"{self.until:%Y-%m-%d %H:%M %Z}" if self.until else "now"
            return f"batches received {start} to {end} ({', '.join(self.batches)})"
        return f"batch{'es' if len(self.batches) != 1 else ''} {', '.join(self.batches)}"

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("since", "until"):
            out[key] = out[key].isoformat() if out[key] else None
        out["flagged"] = [flagged_dict(c) for c in self.flagged]
        out["roots"] = [c.name for c in self.roots]
        out["echoes"] = self.echoes
        out["unlisted"] = self.unlisted
        out["explanation"] = self.explanation.to_dict() if self.explanation else None
        out["words"] = self.words.to_dict() if self.words else None
        out["evidence"] = self.evidence.to_dict() if self.evidence else None
        return out


def detector_for(audit: AuditConfig) -> KSDriftDetector:
    """The drift detector of a monitor's ``audit`` settings."""
    return KSDriftDetector(alpha=audit.alpha, correction=audit.correction, min_ks=audit.min_ks,
                           min_effect_size=audit.min_effect_size)


def _check_not_stale(record: MonitorRecord, baseline: baseline_store.StoredBaseline) -> None:
    if baseline.aligner_id != record.aligner_id or baseline.bank_id != record.bank_id:
        what = "aligner" if baseline.aligner_id != record.aligner_id else f"concept bank (now {record.bank_name} " \
               f"v{record.bank_version})"
        raise ConfigError(
            f"The baseline of {record.name} (built {baseline.created_at:%Y-%m-%d %H:%M}) belongs to another {what} "
            f"than the monitor uses now, so its scores are not comparable: build a new baseline with "
            f"`t2c baseline build --monitor {record.name} --batches ...`."
        )


@dataclass(frozen=True)
class AuditOutcome:
    """A stored audit with what its report is drawn from."""

    summary: AuditSummary
    result: Any  # drift.DriftResult
    reference: np.ndarray  # the baseline's sorted scores (k, n)
    current: np.ndarray  # the window's scores (m, k)
    batch_ids: list[int]
    unexplained: np.ndarray | None = None  # (m,) each window image along the unexplained shift, when unlisted
    direction: np.ndarray | None = None  # window mean minus baseline mean of aligned vectors
    baseline_mean: np.ndarray | None = None


def run_audit(db: Database, monitor: str, *, last: int | None = None, batches: list[str] | None = None,
              since: datetime | None = None, until: datetime | None = None,
              detector: KSDriftDetector | None = None, report_dir: Path | None = None,
              skip_unchanged: bool = False) -> AuditSummary:
    """Audit a window of stored batches against the monitor's active baseline; store and return the result.

    The window is the named ``batches``, or those received in [``since``, ``until``), or the
    ``last`` K; with none of these, the monitor's ``audit`` settings (``window`` before now, else
    ``last``). The detector defaults to the monitor's settings too. With ``report_dir`` an HTML
    report with plots and example images is written there and recorded.
    """
    outcome = audit_window(db, monitor, last=last, batches=batches, since=since, until=until, detector=detector,
                           skip_unchanged=skip_unchanged)
    return write_report(db, outcome, report_dir) if report_dir is not None else outcome.summary


def audit_window(db: Database, monitor: str, *, last: int | None = None, batches: list[str] | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 detector: KSDriftDetector | None = None, skip_unchanged: bool = False) -> AuditOutcome:
    """Compare the window with the baseline and store the audit in one transaction (stored whole or
    not at all, so a retry stores it once). An audit that fails on what it was given (no baseline,
    no batch in the window, a stale baseline, a bad score) is stored as ``failed`` with its error,
    and the error is raised. An I/O failure (disk, database connection) is only raised: the flow
    retries it, and the attempt that succeeds is the audit. The monitor's own window (no window
    given) with nothing new in it raises ``NothingToAudit`` and stores nothing: no batch beyond the
    baseline's, or with ``skip_unchanged`` (what scheduled runs pass) the very batches the last
    audit tested."""
    from sqlalchemy.exc import DBAPIError

    with db.session() as session:
        record = get_monitor(session, monitor)
    try:
        return _audit(db, record, last=last, batches=batches, since=since, until=until, detector=detector,
                      skip_unchanged=skip_unchanged)
    except (OSError, DBAPIError, NothingToAudit):
        raise
    except Exception as exc:
        _record_failure(db, record, exc)
        raise


def _record_failure(db: Database, record: MonitorRecord, error: Exception) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with db.engine.begin() as conn:
            baseline_id = baseline_store.active_baseline_id(conn, record.id)
            audit_store.insert_failed_audit(conn, monitor_id=record.id, baseline_id=baseline_id,
                                            error=f"{type(error).__name__}: {error}")
    except SQLAlchemyError:  # the database itself is what failed: Prefect's run state keeps the error
        pass


def _check_something_new(conn: Any, record: MonitorRecord, baseline_id: int, chosen: list[tuple[int, str]], *,
                         detector: KSDriftDetector, skip_unchanged: bool) -> None:
    """Raise ``NothingToAudit`` when the monitor's own window holds no batch beyond the baseline's, or, with
    ``skip_unchanged`` (scheduled runs), the very window an audit against this baseline already tested: the
    same batches, none grown since, under the same detector settings."""
    config = record.config.audit
    if not chosen:
        newest = audit_store.newest_batch(conn, record.id)
        span = (f"no batch received in the last {format_duration(config.window)}" if config.window is not None
                else "no batch stored but the baseline's")
        seen = f"; the newest, {newest[0]}, was received {newest[1]:%Y-%m-%d %H:%M:%S %Z}" if newest else ""
        raise NothingToAudit(f"Nothing to audit for {record.name}: {span}{seen}. Ingest new images "
                             "(`t2c ingest SOURCE --monitor NAME`); the next audit tests them.")
    if skip_unchanged:
        previous = audit_store.audited_window(conn, record.id, baseline_id, [b for b, _ in chosen], detector.params())
        if previous is not None:
            names = ", ".join(e for _, e in chosen)
            raise NothingToAudit(f"Nothing new to audit for {record.name}: its window ({names}) is what audit "
                                 f"{previous.audit_id} tested at {previous.finished_at:%Y-%m-%d %H:%M:%S %Z}; "
                                 "the next batch stored starts a new audit.")


def _audit(db: Database, record: MonitorRecord, *, last: int | None, batches: list[str] | None,
           since: datetime | None, until: datetime | None, detector: KSDriftDetector | None,
           skip_unchanged: bool = False) -> AuditOutcome:
    monitor = record.name
    config = record.config.audit
    detector = detector or detector_for(config)
    own_window = batches is None and since is None and until is None and last is None
    scheduled = False
    if own_window:
        if config.window is not None:
            since = datetime.now(UTC) - config.window
        else:
            last, scheduled = config.last, True
    with db.engine.connect() as conn:
        baseline = baseline_store.active_baseline(conn, record.id, monitor)
        _check_not_stale(record, baseline)
        in_baseline = set(baseline.batch_ids)
        if scheduled:  # the monitor's own window: reach back until it holds enough images to test
            chosen = audit_store.latest_batches(conn, record.id, last=last, min_images=config.min_images,
                                                exclude=sorted(in_baseline))
        else:
            window_last = None if (batches is not None or since or until) else last
            chosen = [(b, e) for b, e in audit_store.stored_batches(
                conn, record.id, external_ids=batches, last=window_last, since=since, until=until)
                if b not in in_baseline]
        if own_window:
            _check_something_new(conn, record, baseline.id, chosen, detector=detector, skip_unchanged=skip_unchanged)
        if not chosen:
            raise ConfigError(f"No stored batches of {monitor} in the audit window (baseline batches excluded): "
                              "ingest new images or widen the window.")
        embeddings = score_store.window_embeddings(conn, [b for b, _ in chosen], baseline.mean_vector.shape[0])
    scores = np.concatenate([batch_scores(db, record, b) for b, _ in chosen])
    reference = SortedReference.from_sorted(baseline.sorted_scores)
    result = detector.detect(reference, scores, record.concept_names)
    words = explanation = evidence = None
    if embeddings.shape[0] == 0:  # retention dropped them: the scores still test every concept
        direction, norm = np.zeros_like(baseline.mean_vector, dtype=np.float32), 0.0
        note = evidence_note = ("no root causes, words or class evidence: retention dropped the vectors of this "
                                "window's images (their concept scores, tested above, are kept)")
    else:
        direction, norm = drift_direction(baseline.mean_vector, embeddings)
        explanation, note = _explain(db, record, baseline, embeddings, result)
        if result.flagged or (explanation is not None and explanation.unlisted):
            words, note = _words(record, direction, baseline.mean_vector, explanation, note)
        evidence, evidence_note = _class_evidence(db, record, baseline, embeddings)
    stored = {**(explanation.to_dict() if explanation else {}), "words": words.to_dict() if words else None,
              "note": note, "cbm": evidence.to_dict() if evidence else None, "cbm_note": evidence_note}
    with db.engine.begin() as conn:
        concept_ids = baseline_store.concept_ids(conn, record.bank_id)
        audit_id = audit_store.insert_audit(
            conn, monitor_id=record.id, baseline_id=baseline.id, batch_ids=[b for b, _ in chosen],
            n_current=int(scores.shape[0]), params=result.params, direction=direction.astype(np.float32),
            window=(since, until), results=result.concepts, concept_ids=list(concept_ids), explanation=stored,
            residual=explanation.residual if explanation is not None else None,
        )
    flagged = list(result.flagged)
    summary = AuditSummary(id=audit_id, monitor=monitor, baseline_id=baseline.id, batches=[e for _, e in chosen],
                           n_baseline=baseline.sorted_scores.shape[1], n_current=int(scores.shape[0]),
                           flagged=flagged, direction_norm=float(norm), params=result.params, since=since,
                           until=until, explanation=explanation, words=words, note=note, evidence=evidence)
    unexplained = None
    if explanation is not None and explanation.unlisted:
        unexplained = embeddings.astype(np.float64) @ explanation.residual
    return AuditOutcome(summary=summary, result=result, reference=baseline.sorted_scores, current=scores,
                        batch_ids=[b for b, _ in chosen], unexplained=unexplained, direction=direction,
                        baseline_mean=baseline.mean_vector)


def _explain(db: Database, record: MonitorRecord, baseline: baseline_store.StoredBaseline, window: np.ndarray,
             result: Any) -> tuple[ShiftExplanation | None, str | None]:
    """Roots, echoes and unlisted drift (``drift.explain_shift``) against the baseline's vector sample
    (for a baseline built before samples were kept: a fixed sample of its batches' stored vectors)."""
    config = record.config.audit
    sample = baseline.vectors
    if sample is None:
        with db.engine.connect() as conn:
            sample = score_store.sample_embeddings(conn, baseline.batch_ids, config.vectors)
    if sample.shape[0] < 40 or window.shape[0] < 2:
        return None, (f"no root causes: the baseline keeps {sample.shape[0]} vectors and the window has "
                      f"{window.shape[0]} (at least 40 and 2 are needed)")
    return explain_shift(sample, window, record.concept_vectors, result, config.root_settings()), None


def _class_evidence(db: Database, record: MonitorRecord, baseline: baseline_store.StoredBaseline, window: np.ndarray
                    ) -> tuple[EvidenceShift | None, str | None]:
    """How each class's concept evidence shifted, when the monitor names a concept bottleneck model. A model
    that cannot be used (moved, fitted for other models) costs this section and says why, never the audit."""
    from t2c_monitor.aligner import Aligner
    from t2c_monitor.cbm.model import ConceptBottleneck
    from t2c_monitor.cbm.shift import evidence_shift
    from t2c_monitor.errors import T2CError

    path = record.config.cbm
    if path is None:
        return None, None
    sample = baseline.vectors
    if sample is None:
        with db.engine.connect() as conn:
            sample = score_store.sample_embeddings(conn, baseline.batch_ids, record.config.audit.vectors)
    try:
        aligner = Aligner.load(record.config.aligner, expect_clip=record.clip)
        model = ConceptBottleneck.load(path, expect_source=record.encoder, expect_clip=record.clip,
                                       expect_aligner=aligner)
    except T2CError as exc:
        return None, f"no class evidence: {exc}"
    return evidence_shift(model, sample, window, where=str(path)), None


def _words(record: MonitorRecord, direction: np.ndarray, baseline_mean: np.ndarray,
           explanation: ShiftExplanation | None, note: str | None) -> tuple[DriftWords | None, str | None]:
    """The drift in words; a decoder that cannot load costs the words, never the audit."""
    from t2c_monitor.decode.drift import drift_words

    residual = explanation.residual if explanation is not None and explanation.unlisted else None
    try:
        return drift_words(record, direction=direction, baseline_mean=baseline_mean, residual=residual), note
    except Exception as exc:  # noqa: BLE001 - any decoder failure: keep the audit, say why it has no words
        return None, f"no words: {type(exc).__name__}: {exc}"


BASELINE_IMAGES_SHOWN = 20_000  # baseline images a report picks examples from (the first batches' up to this)


def write_report(db: Database, outcome: AuditOutcome, report_dir: Path) -> AuditSummary:
    """Write the stored audit's report (HTML and its Markdown digest) under ``report_dir`` and record
    it; safe to repeat. An I/O error is raised (the flow retries, then ``record_report_failure``)."""
    from t2c_monitor.reports.audit import AuditInputs, write_audit_report, write_monitor_index

    summary = outcome.summary
    with db.session() as session:
        record = get_monitor(session, summary.monitor)
    with db.engine.connect() as conn:  # the report's example images: the window's rows in score order
        image_ids = [i for b in outcome.batch_ids for i in score_store.ok_image_ids(conn, b)]
        base_ids = baseline_store.baseline_batch_ids(conn, summary.baseline_id)
        previous, following = audit_store.neighbour_audits(conn, record.id, summary.id)
        history = {c.name: [(h.audit_id, h.ks_stat, h.flagged) for h in
                            audit_store.concept_history(conn, record.id, c.name, limit=20)]
                   for c in summary.flagged[:6]}
    base_scores, base_image_ids = [], []
    fell = any(c.direction < 0 for c in summary.flagged)  # only a fall is shown with the baseline's images
    for batch_id in base_ids if fell else []:
        if len(base_image_ids) >= BASELINE_IMAGES_SHOWN:
            break
        base_scores.append(batch_scores(db, record, batch_id))
        with db.engine.connect() as conn:
            base_image_ids += score_store.ok_image_ids(conn, batch_id)
    with db.engine.connect() as conn:
        uris = alert_store.image_uris(conn, image_ids + base_image_ids)
    inputs = AuditInputs(
        summary=summary, result=outcome.result, reference=outcome.reference, current=outcome.current,
        window_uris=[uris.get(i, "") for i in image_ids],
        baseline_scores=np.concatenate(base_scores) if base_scores else None,
        baseline_uris=[uris.get(i, "") for i in base_image_ids], unexplained=outcome.unexplained,
        history=history, previous=previous, next=following)
    out_dir = Path(report_dir) / summary.monitor / f"audit-{summary.id}"
    files = write_audit_report(out_dir, inputs)
    if record.config.audit.evidently:
        from t2c_monitor.reports.evidently_run import export_audit

        export_audit(out_dir, summary, outcome.result, outcome.reference, outcome.current)
    with db.engine.begin() as conn:
        alert_store.insert_report(conn, audit_id=summary.id, path=str(files.html))
        audits = audit_store.list_audits(conn, record.id, limit=1000)
    write_monitor_index(out_dir.parent, summary.monitor, audits)
    return dataclasses.replace(summary, report=str(files.html), report_error=None)


def record_report_failure(db: Database, summary: AuditSummary, error: BaseException | str) -> AuditSummary:
    """Keep why the audit's report could not be written (the report job writes it later); the audit
    and its alerts go on without it."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    with db.engine.begin() as conn:
        alert_store.set_report_error(conn, audit_id=summary.id, error=text)
    return dataclasses.replace(summary, report=None, report_error=text)


def load_audit(db: Database, monitor: str, audit_id: int) -> AuditOutcome:
    """A stored audit as ``audit_window`` returned it: its results, explanation and words, with the
    baseline's and the window's scores, to write its report again or decode it later."""
    from t2c_monitor.drift import ConceptDrift, DriftResult

    with db.session() as session:
        record = get_monitor(session, monitor)
    with db.engine.connect() as conn:
        stored = audit_store.stored_audit(conn, record.id, audit_id)
        baseline = baseline_store.baseline_by_id(conn, stored.baseline_id)
        embeddings = score_store.window_embeddings(conn, stored.batch_ids, baseline.mean_vector.shape[0])
    if baseline.bank_id != record.bank_id or len(stored.results) != len(record.concept_names):
        raise ConfigError(f"Audit {audit_id} of {monitor} was made with another concept bank than the monitor "
                          "uses now: its report stays as it was written.")
    scores = np.concatenate([batch_scores(db, record, b) for b in stored.batch_ids])
    reference = SortedReference.from_sorted(baseline.sorted_scores)
    concepts = []
    for j, r in enumerate(stored.results):
        std = float(reference.std[j])
        concepts.append(ConceptDrift(
            name=r.name, index=j, ks_stat=r.ks_stat, p_value=r.p_value, q_value=r.q_value,
            mean_ref=float(reference.mean[j]), mean_cur=float(reference.mean[j]) + r.effect, std_ref=std,
            effect=r.effect, effect_size=r.effect / std if std > 0 else float(np.sign(r.effect) * np.inf),
            direction=r.direction, flagged=r.flagged, rank=r.rank))
    flagged = sorted((c for c in concepts if c.flagged), key=lambda c: c.rank or 0)
    result = DriftResult(concepts=concepts, flagged=flagged, params=stored.params, n_ref=reference.n,
                         n_cur=stored.n_current)
    explanation = ShiftExplanation.from_dict(stored.explanation, stored.residual)
    summary = AuditSummary(
        id=stored.id, monitor=monitor, baseline_id=stored.baseline_id, batches=stored.batches,
        n_baseline=reference.n, n_current=stored.n_current, flagged=flagged,
        direction_norm=float(np.linalg.norm(stored.direction)) if stored.direction is not None else 0.0,
        params=stored.params, since=stored.window[0], until=stored.window[1], explanation=explanation,
        words=DriftWords.from_dict(stored.explanation.get("words")), note=stored.explanation.get("note"),
        report_error=stored.report_error, evidence=EvidenceShift.from_dict(stored.explanation.get("cbm")))
    unexplained = None
    if explanation is not None and explanation.unlisted and explanation.residual.size:
        unexplained = embeddings.astype(np.float64) @ explanation.residual
    return AuditOutcome(summary=summary, result=result, reference=baseline.sorted_scores, current=scores,
                        batch_ids=stored.batch_ids, unexplained=unexplained, direction=stored.direction,
                        baseline_mean=baseline.mean_vector)


def decode_audit_words(db: Database, outcome: AuditOutcome) -> AuditOutcome:
    """Put a stored audit that found a shift into words, if it has none yet (an audit whose decoder
    failed, or stored before audits spoke), and store them."""
    summary = outcome.summary
    if summary.words is not None or not summary.found_shift or outcome.direction is None:
        return outcome
    with db.session() as session:
        record = get_monitor(session, summary.monitor)
    words, note = _words(record, outcome.direction, outcome.baseline_mean, summary.explanation, None)
    with db.engine.begin() as conn:
        audit_store.set_audit_words(conn, summary.id, words.to_dict() if words else None, note)
    return dataclasses.replace(outcome, summary=dataclasses.replace(summary, words=words, note=note))


def refresh_report(db: Database, monitor: str, audit_id: int, report_dir: Path) -> AuditSummary:
    """Decode the audit if it has no words yet and write its report again (links to the audits since)."""
    return write_report(db, decode_audit_words(db, load_audit(db, monitor, audit_id)), report_dir)


@dataclass(frozen=True)
class AuditRun:
    """What one audit run did: the audit (or why there was nothing to audit), its alerts, and the earlier
    failed alerts sent again."""

    summary: AuditSummary | None
    alerts: list[Any] = field(default_factory=list)  # alerts.AlertOutcome
    resent: list[Any] = field(default_factory=list)
    skipped: str | None = None  # NothingToAudit's message when the window held nothing new

    def to_dict(self) -> dict[str, Any]:
        audit = self.summary.to_dict() if self.summary is not None else {"skipped": self.skipped}
        return {**audit, "alerts": [o.to_dict() for o in self.alerts], "resent": [o.to_dict() for o in self.resent]}


def audit_and_alert(db: Database, monitor: str, *, last: int | None = None, batches: list[str] | None = None,
                    since: datetime | None = None, until: datetime | None = None, report_dir: Path | None = None,
                    alerts: bool = True, skip_unchanged: bool = False, log: Any = lambda _: None) -> AuditRun:
    """The audit use case, in this process: send again the monitor's failed alerts, audit the
    window (stored first, so a channel that is down never loses it), write the report, alert the
    channels; a window with nothing new is a run with ``skipped`` saying why (see ``audit_window``).
    The audit flow runs the same steps as tasks, with retries on I/O."""
    from t2c_monitor.alerts import alert_audit, alert_no_data, resend_failed_alerts

    resent = resend_failed_alerts(db, monitor, log=log) if alerts else []
    try:
        summary = run_audit(db, monitor, last=last, batches=batches, since=since, until=until, report_dir=report_dir,
                            skip_unchanged=skip_unchanged)
    except NothingToAudit as nothing:
        log(str(nothing))
        silent = alert_no_data(db, monitor, log=log) if alerts else []
        return AuditRun(summary=None, alerts=silent, resent=resent, skipped=str(nothing))
    return AuditRun(summary=summary, alerts=alert_audit(db, summary, log=log) if alerts else [], resent=resent)
