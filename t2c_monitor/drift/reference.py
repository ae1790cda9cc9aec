"""Reference (baseline) samples of concept scores: how a baseline is sampled and prepared.

``Reservoir`` draws a uniform sample of baseline rows from a stream of score batches, so a
baseline built from many batches weighs every image alike whatever the batch sizes.
``SortedReference`` is that sample prepared for auditing: each concept's scores sorted, with
their mean and standard deviation. Sorting the baseline is most of an audit's work, so a baseline
is prepared once (or stored sorted and read back) and reused by every audit against it; raw
reference arrays are prepared on the fly with identical results. ``check_current`` checks a
window against the reference it is audited with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from t2c_monitor.drift.parallel import default_workers, over_concept_chunks
from t2c_monitor.drift.validation import as_scores


def _moments(rows: np.ndarray, mean: np.ndarray, var: np.ndarray) -> None:
    """Each row's mean and sample variance (ddof=1) into ``mean`` and ``var``: sums in float64,
    deviations in the rows' own dtype (float32 deviations lose ~1e-7 relative, and a float64
    ``einsum`` over float32 input was 20x slower, most of an audit against a stored baseline)."""
    mean[...] = rows.mean(axis=1, dtype=np.float64)
    dev = rows - mean[:, None].astype(rows.dtype)
    np.square(dev, out=dev)
    var[...] = dev.sum(axis=1, dtype=np.float64) / (rows.shape[1] - 1)


@dataclass(frozen=True, eq=False)
class SortedReference:
    """A baseline prepared once for many audits: each concept's scores sorted, with their mean
    and standard deviation.

    Sorting the baseline is most of an audit's work (100k scores x 1000 concepts); a scheduled
    audit against a fixed baseline can prepare it once with ``from_scores`` and pass it wherever a
    reference is accepted. Raw reference arrays are prepared on the fly, so results are identical.
    """

    sorted_scores: np.ndarray
    """``(k, n)``, each row one concept's baseline scores in ascending order."""
    mean: np.ndarray
    std: np.ndarray
    """Sample standard deviation (ddof=1) of each concept's baseline scores."""

    @property
    def n(self) -> int:
        return self.sorted_scores.shape[1]

    @property
    def k(self) -> int:
        return self.sorted_scores.shape[0]

    @classmethod
    def from_scores(cls, scores: Any, workers: int | None = None) -> SortedReference:
        """Prepare baseline scores ``(n, k)`` (numpy, torch or lists)."""
        ref = as_scores(scores, "reference")
        n, k = ref.shape
        rows = np.empty((k, n), dtype=ref.dtype)
        mean = np.empty(k)
        var = np.empty(k)

        def prepare(j0: int, j1: int) -> None:
            r = rows[j0:j1]
            r[...] = ref[:, j0:j1].T
            r.sort(axis=1)
            _moments(r, mean[j0:j1], var[j0:j1])

        over_concept_chunks(prepare, k, default_workers(workers))
        return cls(rows, mean, np.sqrt(var))

    @classmethod
    def from_sorted(cls, sorted_scores: np.ndarray, workers: int | None = None) -> SortedReference:
        """A baseline stored already sorted (``(k, n)``, rows ascending, as ``baseline_concept``
        keeps it): only the mean and standard deviation are computed."""
        rows = np.ascontiguousarray(sorted_scores)  # row-major, as from_scores builds it: same sums, same bits
        if rows.ndim != 2 or rows.shape[1] < 2:
            raise ValueError(f"sorted baseline scores must be (concepts, n >= 2), got shape {rows.shape}")
        k = rows.shape[0]
        mean = np.empty(k)
        var = np.empty(k)
        over_concept_chunks(lambda j0, j1: _moments(rows[j0:j1], mean[j0:j1], var[j0:j1]), k, default_workers(workers))
        return cls(rows, mean, np.sqrt(var))


def as_reference(reference: Any, workers: int | None) -> SortedReference:
    return reference if isinstance(reference, SortedReference) else SortedReference.from_scores(reference, workers)


def check_current(current: Any, reference: SortedReference) -> np.ndarray:
    cur = as_scores(current, "current")
    if cur.shape[1] != reference.k:
        raise ValueError(
            f"reference has {reference.k} concepts but current has {cur.shape[1]}: "
            "score both sides with the same concept bank"
        )
    return cur


class Reservoir:
    """A uniform random sample of at most ``size`` rows from a stream of score batches.

    Algorithm R, vectorised per batch: the i-th row seen (0-based) replaces a uniformly chosen
    slot with probability size / (i + 1). Each row past the fill draws exactly one uniform double
    from a generator seeded with ``seed``, so the sample depends only on the seed and the rows,
    not on how the stream was cut into batches.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self.n_seen = 0
        self._rng = np.random.default_rng(seed)
        self._rows: np.ndarray | None = None

    def add(self, batch: Any) -> None:
        """Offer a batch of rows ``(n, k)`` to the sample."""
        arr = np.asarray(batch.detach().cpu().numpy() if hasattr(batch, "detach") else batch)
        if arr.ndim != 2:
            raise ValueError(f"batch must be 2-d (n, k), got shape {arr.shape}")
        if self._rows is None:
            self._rows = np.empty((self.size, arr.shape[1]), dtype=arr.dtype)
        elif arr.shape[1] != self._rows.shape[1]:
            raise ValueError(
                f"batch has {arr.shape[1]} columns but the reservoir holds {self._rows.shape[1]}: "
                "add scores from the same concept bank"
            )
        n = arr.shape[0]
        fill = min(max(self.size - self.n_seen, 0), n)
        self._rows[self.n_seen : self.n_seen + fill] = arr[:fill]
        if fill < n:
            seen = np.arange(self.n_seen + fill, self.n_seen + n, dtype=np.float64)  # 0-based stream index
            slot = np.floor(self._rng.random(n - fill) * (seen + 1)).astype(np.int64)
            keep = slot < self.size
            src = np.flatnonzero(keep) + fill
            slot = slot[keep]
            # later rows overwrite earlier ones in the same slot, as in the sequential algorithm
            last = slot.size - 1 - np.unique(slot[::-1], return_index=True)[1]
            self._rows[slot[last]] = arr[src[last]]
        self.n_seen += n

    def sample(self) -> np.ndarray:
        """A copy of the current sample: ``min(size, n_seen)`` rows."""
        if self._rows is None:
            raise ValueError("the reservoir is empty: add() batches before sampling")
        return self._rows[: min(self.size, self.n_seen)].copy()
