"""How well an aligner predicts CLIP embeddings: R², cosine and zero-shot accuracies on held-out pairs.

``evaluate`` scores in-memory pairs, ``evaluate_chunks`` streamed ``(X, Y, labels)`` chunks (a
feature file larger than memory); both return ``AlignmentMetrics``, the figures the paper reports
(retained accuracy relative to the CLIP model itself, Appendix A).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from t2c_monitor.aligner.model import REFIT_HINT, Aligner
from t2c_monitor.errors import SpaceMismatchError
from t2c_monitor.features import check_pairs
from t2c_monitor.identity import describe
from t2c_monitor.progress import progress_bar


@dataclass(frozen=True)
class AlignmentMetrics:
    """How well an aligner predicts CLIP embeddings on held-out pairs.

    ``r2``: 1 - SSE/SST pooled over all output dimensions, SST around each dimension's mean (the
    paper's coefficient of determination). ``cosine``: mean cosine between aligned and true CLIP
    embeddings. With labels and class text vectors: ``aligned_accuracy`` (zero-shot accuracy of
    aligned features), ``clip_accuracy`` (of the true CLIP embeddings) and ``retained_accuracy`` =
    aligned / CLIP accuracy (the paper's definition: relative to the *target* model, Appendix A).
    ``source_accuracy`` (the source model's own classifier accuracy, when given) and
    ``accuracy_vs_source`` = aligned / source accuracy are reported alongside, not instead.
    """

    n: int
    r2: float
    cosine: float
    aligned_accuracy: float | None = None
    clip_accuracy: float | None = None
    retained_accuracy: float | None = None
    source_accuracy: float | None = None
    accuracy_vs_source: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    aligner: Aligner,
    X: Tensor,
    Y: Tensor,
    *,
    labels: Tensor | None = None,
    class_vectors: Tensor | None = None,
    source_accuracy: float | None = None,
    chunk_rows: int = 65536,
) -> AlignmentMetrics:
    """Score ``aligner`` on held-out pairs ``(X, Y)``; zero-shot figures need labels and class vectors."""
    X, Y = torch.as_tensor(X), torch.as_tensor(Y)
    check_pairs(X, Y)
    if (labels is None) != (class_vectors is None):
        raise ValueError("labels and class_vectors go together: pass both for zero-shot accuracy, or neither")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.shape[0] != X.shape[0]:
            raise ValueError(
                f"labels must be 1-d with one entry per pair ({X.shape[0]}), got shape {tuple(labels.shape)}"
            )
    chunks = (
        (X[i : i + chunk_rows], Y[i : i + chunk_rows], None if labels is None else labels[i : i + chunk_rows])
        for i in range(0, X.shape[0], chunk_rows)
    )
    return evaluate_chunks(aligner, chunks, class_vectors=class_vectors, source_accuracy=source_accuracy)


def evaluate_chunks(
    aligner: Aligner,
    chunks: Iterable[tuple[Tensor, Tensor, Tensor | None]],
    *,
    class_vectors: Tensor | None = None,
    source_accuracy: float | None = None,
    progress: bool = False,
    total_rows: int | None = None,
) -> AlignmentMetrics:
    """``evaluate`` over ``(X, Y, labels)`` chunks, streamed: the pairs never need to fit in memory.

    ``labels`` may be None in every chunk, or a tensor in every chunk (then ``class_vectors`` is
    required); zero-shot predictions are counted chunk by chunk.
    """
    from t2c_monitor.scoring import zero_shot_predict

    if source_accuracy is not None and not 0.0 <= source_accuracy <= 1.0:
        raise ValueError(f"source_accuracy must be a fraction in [0, 1], got {source_accuracy}")
    if class_vectors is not None:
        class_vectors = torch.as_tensor(class_vectors)
        if class_vectors.ndim != 2 or class_vectors.shape[1] != aligner.d_out:
            raise SpaceMismatchError(
                f"class_vectors have shape {tuple(class_vectors.shape)} but the aligner outputs {aligner.d_out}-d "
                f"vectors of CLIP model {describe(aligner.clip)}: encode the class texts with that CLIP model"
            )
    n = labelled = aligned_correct = clip_correct = 0
    sse = cos_sum = 0.0
    y_sum = torch.zeros(aligner.d_out, dtype=torch.float64)
    y_sq = torch.zeros(aligner.d_out, dtype=torch.float64)
    with progress_bar("evaluating the aligner", total_rows, progress) as advance:
        for X, Y, labels in chunks:
            X, Y = torch.as_tensor(X), torch.as_tensor(Y)
            check_pairs(X, Y)
            if Y.shape[1] != aligner.d_out:
                raise SpaceMismatchError(
                    f"Y has width {Y.shape[1]} but the aligner outputs {aligner.d_out}-d vectors of CLIP model "
                    f"{describe(aligner.clip)}: embed with that CLIP model, or {REFIT_HINT}"
                )
            pred = aligner.transform(X.cpu())
            true = Y.to("cpu", torch.float32)
            sse += float(((pred.double() - true.double()) ** 2).sum())
            cos_sum += float(F.cosine_similarity(pred, true, dim=1).double().sum())
            y_sum += true.double().sum(dim=0)
            y_sq += (true.double() ** 2).sum(dim=0)
            n += X.shape[0]
            if labels is not None:
                if class_vectors is None:
                    raise ValueError("labels and class_vectors go together: pass class_vectors for zero-shot accuracy")
                labels = torch.as_tensor(labels).to(torch.long)
                if labels.ndim != 1 or labels.shape[0] != X.shape[0]:
                    raise ValueError(
                        f"labels must be 1-d with one entry per pair of the chunk ({X.shape[0]}), "
                        f"got shape {tuple(labels.shape)}"
                    )
                aligned_correct += int((zero_shot_predict(pred, class_vectors) == labels).sum())
                clip_correct += int((zero_shot_predict(true, class_vectors) == labels).sum())
                labelled += X.shape[0]
            advance(X.shape[0])
    if n < 2:
        raise ValueError(f"the pairs number {n}: R² needs at least 2")
    if labelled not in (0, n):
        raise ValueError(f"{labelled} of {n} pairs have labels: give labels for every chunk or for none")
    if class_vectors is not None and not labelled:
        raise ValueError("class_vectors without labels: pass the labels for zero-shot accuracy, or neither")
    sst = float((y_sq - y_sum**2 / n).sum())
    r2 = 1.0 - sse / sst if sst > 0 else float("nan")

    aligned_acc = clip_acc = retained = vs_source = None
    if labelled:
        aligned_acc, clip_acc = aligned_correct / n, clip_correct / n
        retained = aligned_acc / clip_acc if clip_acc > 0 else None
        if source_accuracy is not None and source_accuracy > 0:
            vs_source = aligned_acc / source_accuracy
    return AlignmentMetrics(
        n=n,
        r2=r2,
        cosine=cos_sum / n,
        aligned_accuracy=aligned_acc,
        clip_accuracy=clip_acc,
        retained_accuracy=retained,
        source_accuracy=source_accuracy,
        accuracy_vs_source=vs_source,
    )
