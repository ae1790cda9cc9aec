"""Cosine similarities against a concept bank, and zero-shot classification with them.

Everything here works on plain tensors: embeddings are aligned image vectors (or CLIP image
vectors) of shape ``(n, d)``, bank or class vectors are text vectors ``(k, d)``. Both sides are
normalised here, so callers may pass raw aligner outputs. Checking that both sides live in the
same CLIP space is the caller's job (``t2c_monitor.concepts.check_same_space``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from t2c_monitor.device import resolve_device


def _check_pair(embeddings: Tensor, vectors: Tensor, vectors_name: str) -> None:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be 2-d (n, d), got shape {tuple(embeddings.shape)}")
    if vectors.ndim != 2:
        raise ValueError(f"{vectors_name} must be 2-d (k, d), got shape {tuple(vectors.shape)}")
    if embeddings.shape[1] != vectors.shape[1]:
        raise ValueError(
            f"embeddings have width {embeddings.shape[1]} but {vectors_name} have width {vectors.shape[1]}: "
            "align the embeddings into the CLIP space the vectors were encoded in"
        )
    if vectors.shape[0] == 0:
        raise ValueError(f"{vectors_name} is empty: give at least one vector")


def cosine_scores(
    embeddings: Tensor,
    bank_vectors: Tensor,
    batch_size: int = 65536,
    device: str | torch.device | None = None,
) -> Tensor:
    """Cosine similarity of every embedding with every bank vector: ``(n, k)`` float32 on CPU.

    Embeddings are processed ``batch_size`` rows at a time on ``device`` (the configured device
    by default) so millions of rows never need to sit on the accelerator at once. A zero
    embedding scores 0 against every concept rather than NaN.
    """
    _check_pair(embeddings, bank_vectors, "bank_vectors")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    bank = F.normalize(bank_vectors.to(dev, torch.float32), dim=1)
    out = torch.empty((embeddings.shape[0], bank_vectors.shape[0]), dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, embeddings.shape[0], batch_size):
            chunk = embeddings[start : start + batch_size].to(dev, torch.float32)
            out[start : start + chunk.shape[0]] = (F.normalize(chunk, dim=1) @ bank.T).cpu()
    return out


def zero_shot_predict(embeddings: Tensor, class_vectors: Tensor) -> Tensor:
    """Index of the most similar class vector for each embedding: ``(n,)`` long."""
    return cosine_scores(embeddings, class_vectors).argmax(dim=1)


def zero_shot_accuracy(embeddings: Tensor, class_vectors: Tensor, labels: Tensor) -> float:
    """Fraction of embeddings whose nearest class vector is their label."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must be 1-d with one entry per embedding ({embeddings.shape[0]}), got shape {tuple(labels.shape)}"
        )
    if labels.shape[0] == 0:
        raise ValueError("embeddings is empty: accuracy of zero images is undefined")
    predictions = zero_shot_predict(embeddings, class_vectors)
    return float((predictions == labels.to(torch.long)).float().mean().item())
