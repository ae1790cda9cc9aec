"""Input checks shared by the drift audit: score matrices of finite numbers, enough samples.

Scores arrive as numpy arrays, torch tensors or nested lists, one column per concept. Every entry
point (preparing a baseline, scoring a window, a drift direction) turns them into one 2-d float
array here and refuses, with what to do about it, inputs an audit cannot answer honestly: no
concepts, too few samples for a KS test to have any power, or NaN/inf scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_SAMPLES = 20
"""Fewest scores per side an audit accepts; below this a KS test has almost no power."""


def as_scores(x: Any, name: str) -> np.ndarray:
    """A 2-d float array ``(n, k)`` of finite scores from numpy, torch or nested lists."""
    if hasattr(x, "detach"):  # a torch tensor; torch is not imported here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-d (n_samples, n_concepts), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no concepts (shape {arr.shape}): score at least one concept")
    if arr.shape[0] < MIN_SAMPLES:
        raise ValueError(
            f"{name} has {arr.shape[0]} samples per concept; an audit needs at least {MIN_SAMPLES}: "
            "widen the window or grow the baseline"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN/inf scores in {rows.size} rows (first rows {rows[:5].tolist()}): "
            "drop or re-score those images before the audit"
        )
    return arr
