"""Measuring a built world against its ground truth: the semantic claims of text-to-concept.

Held-out images are embedded by the world CLIP and by the shape-only source encoder (both through
the production loaders), an exact least-squares aligner maps source features into CLIP space, and
the default concept bank supplies class vectors and effect concepts. Reported: R² of the aligner,
zero-shot accuracy per factor in CLIP space and in aligned space, and per effect the AUROC of its
concept score in both spaces.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2c_monitor.world.factors import EFFECTS, FACTORS

BANK_FILE = "concepts.yaml"


def default_bank_path() -> Path:
    """The shapes world's default concept bank (YAML in the package)."""
    return Path(str(resources.files("t2c_monitor.world").joinpath(BANK_FILE)))


def auroc(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count half)."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("labels must contain both positives and negatives for an AUROC")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate_world(world, *, n_fit: int = 10_000, n_test: int = 2000, seed: int = 424242, ridge: float = 0.0,
                   device: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Fit an aligner from the world's source encoder to its CLIP on fresh images and score it.

    ``world`` is a ``t2c_monitor.world.build.World``. Images come from seeds no build uses
    (``seed`` and ``seed + 1``), so every figure is held out.
    """
    from t2c_monitor.aligner import evaluate, fit_on_images
    from t2c_monitor.concepts import encode_bank, load_bank_definition
    from t2c_monitor.scoring import cosine_scores, zero_shot_accuracy
    from t2c_monitor.world.generate import generate

    if n_fit < 2 or n_test < 2:
        raise ValueError(f"n_fit and n_test must be >= 2, got {n_fit} and {n_test}")
    clip, source = world.clip_model(device=device), world.source_encoder(device=device)
    fit, test = generate(n_fit, seed=seed), generate(n_test, seed=seed + 1)
    fit_images, test_images = fit.pil_images(), test.pil_images()
    aligner = fit_on_images(source, clip, fit_images, ridge=ridge, progress=progress)
    Y_test = clip.encode_images(test_images, batch_size=256, progress=progress)
    X_test = source.encode_images(test_images, batch_size=256, progress=progress)
    aligned = aligner.transform(X_test)
    bank = encode_bank(load_bank_definition(default_bank_path()), clip)
    metrics = evaluate(aligner, X_test, Y_test)
    result: dict[str, Any] = {"r2": metrics.r2, "cosine": metrics.cosine, "n_fit": n_fit, "n_test": n_test,
                              "zero_shot": {}, "effect_auroc": {}}
    for factor, values in FACTORS.items():
        vectors = bank.vectors[[bank.index(v) for v in values]]
        labels = torch.from_numpy(test.labels(factor))
        clip_acc = zero_shot_accuracy(Y_test, vectors, labels)
        aligned_acc = zero_shot_accuracy(aligned, vectors, labels)
        result["zero_shot"][factor] = {"clip": clip_acc, "aligned": aligned_acc, "chance": 1.0 / len(values),
                                       "retained": aligned_acc / clip_acc if clip_acc > 0 else None}
    for effect in EFFECTS:
        vector = bank.vectors[[bank.index(effect)]]
        labels = test.labels(effect)
        result["effect_auroc"][effect] = {"clip": auroc(cosine_scores(Y_test, vector)[:, 0], labels),
                                          "aligned": auroc(cosine_scores(aligned, vector)[:, 0], labels)}
    return result
