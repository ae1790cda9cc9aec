"""The use cases behind ``t2c cbm``: fit a concept bottleneck model for a monitor, evaluate it, explain it.

* ``fit_cbm``: labelled images -> the monitor's encoder and aligner -> similarities to the monitor's
  bank concepts -> a sparse head (``cbm.fit``), next to a linear probe on the raw source features;
  split into train / validation / test per class (stratified, seeded); saved with both.
* ``evaluate_cbm``: both heads' accuracy on another labelled set.
* ``explain_cbm``: for each image, the predicted class, the concepts with the largest shares of its
  logit, and the concepts that most separate it from the runner-up (Appendix G).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2c_monitor.cbm.data import Embedded, Skipped, embed, read_labelled
from t2c_monitor.cbm.model import ConceptBottleneck, LinearProbe, aligner_fingerprint
from t2c_monitor.errors import ConfigError
from t2c_monitor.store import Database
from t2c_monitor.store.monitors import MonitorRecord, get_monitor


def _record_and_models(db: Database, monitor: str, device: str | None = None) -> tuple[MonitorRecord, Any]:
    from t2c_monitor.monitor_models import load_models

    with db.session() as session:
        record = get_monitor(session, monitor)
    return record, load_models(record.config, device=device)


def split_indices(labels: list[str], *, test_fraction: float, val_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test indices, stratified by class; a class of fewer than 3 images trains only."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"--test-fraction must be between 0 and 1, got {test_fraction}.")
    rng = np.random.default_rng(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for label in sorted(set(labels)):
        members = rng.permutation([i for i, x in enumerate(labels) if x == label]).tolist()
        if len(members) < 3:
            parts[0].extend(members)
            continue
        n_test = max(1, round(len(members) * test_fraction))
        n_val = max(1, round((len(members) - n_test) * val_fraction))
        parts[2].extend(members[:n_test])
        parts[1].extend(members[n_test:n_test + n_val])
        parts[0].extend(members[n_test + n_val:])
    return tuple(np.array(sorted(p), dtype=int) for p in parts)  # type: ignore[return-value]


@dataclass
class FitReport:
    """What ``fit_cbm`` measured on the held-out test images, and where the model went."""

    path: str
    classes: list[str]
    n_train: int
    n_val: int
    n_test: int
    accuracy: float
    probe_accuracy: float
    per_class: dict[str, dict[str, float]]
    concepts_used: dict[str, list[str]]
    l1_penalty: float
    path_accuracies: list[tuple[float, float, int]]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.accuracy / self.probe_accuracy if self.probe_accuracy else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "classes": self.classes, "n_train": self.n_train, "n_val": self.n_val,
                "n_test": self.n_test, "accuracy": self.accuracy, "probe_accuracy": self.probe_accuracy,
                "ratio": self.ratio, "per_class": self.per_class, "concepts_used": self.concepts_used,
                "l1_penalty": self.l1_penalty,
                "l1_path": [{"penalty": p, "val_accuracy": a, "nonzero": n} for p, a, n in self.path_accuracies],
                "skipped": [{"uri": s.uri, "reason": s.reason} for s in self.skipped]}


def _label_indices(labels: list[str | None], classes: tuple[str, ...]) -> torch.Tensor:
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[x] for x in labels], dtype=torch.long)


def _per_class(classes: tuple[str, ...], y: torch.Tensor, pred: torch.Tensor, probe_pred: torch.Tensor | None
               ) -> dict[str, dict[str, float]]:
    out = {}
    for i, name in enumerate(classes):
        mask = y == i
        if bool(mask.any()):
            out[name] = {"n": int(mask.sum()), "accuracy": float((pred[mask] == i).float().mean())}
            if probe_pred is not None:
                out[name]["probe_accuracy"] = float((probe_pred[mask] == i).float().mean())
    return out


@dataclass(frozen=True)
class BankConcepts:
    """The concepts a model is fitted on: names, unit vectors, and which bank they came from."""

    names: tuple[str, ...]
    vectors: np.ndarray
    bank: dict[str, Any]

    @classmethod
    def of_monitor(cls, record: MonitorRecord) -> BankConcepts:
        return cls(tuple(record.concept_names), np.asarray(record.concept_vectors),
                   {"name": record.bank_name, "version": record.bank_version})


def fit_from_embedded(data: Embedded, concepts: BankConcepts, models: Any, *, label_key: str = "label",
                      test_fraction: float = 0.2, val_fraction: float = 0.2, seed: int = 0
                      ) -> tuple[ConceptBottleneck, FitReport]:
    """Fit the sparse concept head and the linear probe on embedded labelled images (split as the module
    says). ``models`` needs the ``encoder`` and ``clip`` identities and the ``aligner``."""
    from t2c_monitor.cbm.fit import fit_linear_probe, fit_sparse_head, standardise

    labels = [str(x) for x in data.labels]
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise ConfigError(f"A concept bottleneck model needs at least two classes; the labels hold {len(classes)}.")
    train, val, test = split_indices(labels, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    if len(test) == 0 or len(val) == 0:
        raise ConfigError("Too few labelled images to hold out validation and test images: give at least 3 per "
                          "class.")
    y = _label_indices(labels, classes)
    vectors = torch.tensor(np.array(concepts.vectors, dtype=np.float32))
    sims = torch.nn.functional.normalize(data.aligned.float(), dim=1) @ vectors.T
    sim_mean, sim_std = standardise(sims[train])
    z = (sims - sim_mean) / sim_std
    head = fit_sparse_head(z[train], y[train], z[val], y[val], len(classes))
    feat_mean, feat_std = standardise(data.features[train].float())
    f = (data.features.float() - feat_mean) / feat_std
    probe_fit = fit_linear_probe(f[train], y[train], f[val], y[val], len(classes))
    probe = LinearProbe(probe_fit.weight, probe_fit.bias, feat_mean, feat_std)
    model = ConceptBottleneck(
        classes=classes, concept_names=concepts.names, weight=head.weight, bias=head.bias,
        concept_vectors=vectors, sim_mean=sim_mean, sim_std=sim_std, source=models.encoder.identity,
        clip=models.clip.identity, aligner_sha256=aligner_fingerprint(models.aligner),
        bank=concepts.bank, label_key=label_key, probe=probe)
    pred = model.predict(data.aligned[test])
    probe_pred = probe.logits(data.features[test]).argmax(1)
    report = FitReport(
        path="", classes=list(classes), n_train=len(train), n_val=len(val), n_test=len(test),
        accuracy=float((pred == y[test]).float().mean()),
        probe_accuracy=float((probe_pred == y[test]).float().mean()),
        per_class=_per_class(classes, y[test], pred, probe_pred), concepts_used=model.concepts_used(),
        l1_penalty=head.penalty, path_accuracies=head.path, skipped=data.skipped)
    model.metrics = {"test_accuracy": report.accuracy, "probe_test_accuracy": report.probe_accuracy,
                     "n_train": report.n_train, "n_val": report.n_val, "n_test": report.n_test,
                     "l1_penalty": head.penalty, "seed": seed}
    return model, report


def fit_cbm(db: Database, monitor: str, data: str | Path, *, out: str | Path, label_key: str = "label",
            test_fraction: float = 0.2, seed: int = 0, device: str | None = None,
            progress: bool = False) -> FitReport:
    """Fit a concept bottleneck model for ``monitor`` on labelled images and save it to ``out``."""
    record, models = _record_and_models(db, monitor, device)
    embedded = embed(models, read_labelled(data, label_key=label_key), progress=progress)
    model, report = fit_from_embedded(embedded, BankConcepts.of_monitor(record), models, label_key=label_key,
                                      test_fraction=test_fraction, seed=seed)
    report.path = str(model.save(out))
    return report


def load_monitor_cbm(record: MonitorRecord, models: Any, path: str | Path | None = None) -> ConceptBottleneck:
    """The model at ``path`` (default: the monitor's ``cbm:`` setting), checked against the monitor's models."""
    path = path or record.config.cbm
    if path is None:
        raise ConfigError(f"Monitor {record.name} names no concept bottleneck model: pass --model DIR, or set "
                          "`cbm: DIR` in its monitor file and apply it.")
    return ConceptBottleneck.load(path, expect_source=models.encoder.identity, expect_clip=models.clip.identity,
                                  expect_aligner=models.aligner)


@dataclass
class EvalReport:
    n_images: int
    accuracy: float
    probe_accuracy: float | None
    per_class: dict[str, dict[str, float]]
    unknown_labels: dict[str, int]
    skipped: list[Skipped]

    def to_dict(self) -> dict[str, Any]:
        return {"n_images": self.n_images, "accuracy": self.accuracy, "probe_accuracy": self.probe_accuracy,
                "per_class": self.per_class, "unknown_labels": self.unknown_labels,
                "skipped": [{"uri": s.uri, "reason": s.reason} for s in self.skipped]}


def evaluate_cbm(db: Database, monitor: str, data: str | Path, *, model_path: str | Path | None = None,
                 label_key: str | None = None, device: str | None = None, progress: bool = False) -> EvalReport:
    """The model's and its probe's accuracy on labelled images; labels it does not know are counted apart."""
    record, models = _record_and_models(db, monitor, device)
    model = load_monitor_cbm(record, models, model_path)
    embedded = embed(models, read_labelled(data, label_key=label_key or model.label_key), progress=progress)
    known = [i for i, x in enumerate(embedded.labels) if x in model.classes]
    unknown: dict[str, int] = {}
    for x in embedded.labels:
        if x not in model.classes:
            unknown[str(x)] = unknown.get(str(x), 0) + 1
    if not known:
        raise ConfigError(f"None of the labels in {data} is a class of the model ({', '.join(model.classes)}).")
    y = _label_indices([embedded.labels[i] for i in known], model.classes)
    pred = model.predict(embedded.aligned[known])
    probe_pred = model.probe.logits(embedded.features[known]).argmax(1) if model.probe is not None else None
    return EvalReport(n_images=len(known), accuracy=float((pred == y).float().mean()),
                      probe_accuracy=None if probe_pred is None else float((probe_pred == y).float().mean()),
                      per_class=_per_class(model.classes, y, pred, probe_pred), unknown_labels=unknown,
                      skipped=embedded.skipped)


@dataclass(frozen=True)
class ConceptShare:
    concept: str
    contribution: float  # its part in the logit (weight x standardised similarity)
    share: float  # of the absolute contributions to that logit
    z: float  # the image's similarity to the concept, in training standard deviations


@dataclass(frozen=True)
class Explanation:
    uri: str
    predicted: str
    probability: float
    runner_up: str
    label: str | None
    evidence: list[ConceptShare]  # the largest shares of the predicted class's logit
    separating: list[ConceptShare]  # what most separates the predicted class from the runner-up

    @property
    def correct(self) -> bool | None:
        return None if self.label is None else self.label == self.predicted

    def to_dict(self) -> dict[str, Any]:
        def shares(items: list[ConceptShare]) -> list[dict[str, Any]]:
            return [{"concept": s.concept, "contribution": s.contribution, "share": s.share, "z": s.z} for s in items]

        return {"uri": self.uri, "predicted": self.predicted, "probability": self.probability,
                "runner_up": self.runner_up, "label": self.label, "correct": self.correct,
                "evidence": shares(self.evidence), "separating": shares(self.separating)}


def explain_vectors(model: ConceptBottleneck, aligned: torch.Tensor, uris: list[str], labels: list[str | None], *,
                    top: int = 5) -> list[Explanation]:
    """Each image's prediction and its concept evidence (see the module doc)."""
    z = model.standardised(aligned)
    logits = z @ model.weight.T + model.bias
    probabilities = torch.softmax(logits, dim=1)
    order = logits.argsort(dim=1, descending=True)
    out = []
    for i in range(len(uris)):
        p, r = int(order[i, 0]), int(order[i, 1])
        own = model.weight[p] * z[i]
        gap = (model.weight[p] - model.weight[r]) * z[i]

        def ranked(values: torch.Tensor, i: int = i) -> list[ConceptShare]:
            total = float(values.abs().sum()) or 1.0
            keep = [k for k in values.argsort(descending=True).tolist() if values[k] != 0][:top]
            return [ConceptShare(model.concept_names[k], float(values[k]), float(values[k]) / total, float(z[i, k]))
                    for k in keep if values[k] > 0]

        out.append(Explanation(uri=uris[i], predicted=model.classes[p], probability=float(probabilities[i, p]),
                               runner_up=model.classes[r], label=labels[i], evidence=ranked(own),
                               separating=ranked(gap)))
    return out


def explain_cbm(db: Database, monitor: str, images: str | Path, *, model_path: str | Path | None = None,
                top: int = 5, only_wrong: bool = False, label_key: str | None = None, device: str | None = None,
                progress: bool = False) -> tuple[list[Explanation], list[Skipped]]:
    """Explain the model's prediction for each image (labelled or not); ``only_wrong``: misclassified ones."""
    record, models = _record_and_models(db, monitor, device)
    model = load_monitor_cbm(record, models, model_path)
    labelled = read_labelled(images, label_key=label_key or model.label_key, need_labels=only_wrong)
    embedded = embed(models, labelled, progress=progress)
    explanations = explain_vectors(model, embedded.aligned, embedded.uris, embedded.labels, top=top)
    if only_wrong:
        explanations = [e for e in explanations if e.correct is False]
    return explanations, embedded.skipped
