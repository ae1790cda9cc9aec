"""Concept drift audits: which human concepts shifted between a baseline and a window, and which way.

Every image has a vector of concept scores (cosine similarity of its aligned embedding with each
concept of a bank). An audit compares, concept by concept, a reservoir sample of baseline scores
with the scores of a recent window. Plain KS on cosine similarities cries wolf: at large n it
finds negligible shifts significant, and one shift of the embeddings moves many correlated
concepts at once. So the audit

* scores every concept with a two-sample Kolmogorov-Smirnov test (``ks_2samp_batched``, all
  concepts at once, p-values identical to ``scipy.stats.ks_2samp``),
* corrects across the bank (Benjamini-Hochberg q-values by default, or Bonferroni),
* flags only shifts that are also large enough to matter: a minimum KS statistic AND a minimum
  mean shift in baseline standard deviations,
* reports the direction of each shift and ranks flagged concepts by effect size.

The layout follows alibi-detect's univariate drift detectors: ``ConceptDriftDetector`` holds the
shared work (validation, correction, decision, typed result) and a subclass only scores each
concept (``KSDriftDetector.score``). Every detector returns the same ``DriftResult`` so one table
fits all. ``Reservoir`` builds the baseline sample; ``drift_direction`` gives the embedding-space
direction of a window's shift for decoding back to text.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import special
from scipy.stats import kstwo

MIN_SAMPLES = 20
"""Fewest scores per side an audit accepts; below this a KS test has almost no power."""

_MAX_AUTO_N = 10_000  # scipy's ks_2samp(method="auto") is exact when max(n1, n2) <= this
_CHUNK = 64  # concepts sorted and searched together: keeps each side's chunk in cache


# --------------------------------------------------------------------------------------------
# Input checks


def _as_scores(x: Any, name: str) -> np.ndarray:
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


def _check_current(current: Any, reference: SortedReference) -> np.ndarray:
    cur = _as_scores(current, "current")
    if cur.shape[1] != reference.k:
        raise ValueError(
            f"reference has {reference.k} concepts but current has {cur.shape[1]}: "
            "score both sides with the same concept bank"
        )
    return cur


# --------------------------------------------------------------------------------------------
# The scoring function


class KSBatch(NamedTuple):
    """Per-concept KS results, arrays of length k."""

    statistic: np.ndarray
    """Two-sided KS statistic, equal to ``scipy.stats.ks_2samp(...).statistic``."""
    pvalue: np.ndarray
    """Two-sided p-value, equal (to 1e-6 or better) to ``scipy.stats.ks_2samp(...).pvalue``."""
    sign: np.ndarray
    """+1 where the current scores are shifted up at the KS location (the baseline ECDF lies above
    the window's: "more of the concept"), -1 where shifted down; scipy's ``statistic_sign``."""


def _run_bounds(sorted_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each element of rows sorted ascending: how many in its row are < it, and <= it."""
    b, n = sorted_rows.shape
    idx = np.broadcast_to(np.arange(n), (b, n))
    change = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    starts = np.ones((b, n), dtype=bool)
    starts[:, 1:] = change
    ends = np.ones((b, n), dtype=bool)
    ends[:, :-1] = change
    below = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    upto = np.minimum.accumulate(np.where(ends, idx + 1, n)[:, ::-1], axis=1)[:, ::-1]
    return below, upto


def _threaded(fn: Any, k: int, workers: int) -> None:
    """Run ``fn(j0, j1)`` over chunks of concept indices on up to ``workers`` threads (numpy's
    sort and search release the GIL)."""
    starts = range(0, k, _CHUNK)
    if workers <= 1 or k <= _CHUNK:
        for j0 in starts:
            fn(j0, min(j0 + _CHUNK, k))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda j0: fn(j0, min(j0 + _CHUNK, k)), starts))


def _default_workers(workers: int | None) -> int:
    return min(2, os.cpu_count() or 1) if workers is None else max(1, workers)


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
        ref = _as_scores(scores, "reference")
        n, k = ref.shape
        rows = np.empty((k, n), dtype=ref.dtype)
        mean = np.empty(k)
        var = np.empty(k)

        def prepare(j0: int, j1: int) -> None:
            r = rows[j0:j1]
            r[...] = ref[:, j0:j1].T
            r.sort(axis=1)
            _moments(r, mean[j0:j1], var[j0:j1])

        _threaded(prepare, k, _default_workers(workers))
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
        _threaded(lambda j0, j1: _moments(rows[j0:j1], mean[j0:j1], var[j0:j1]), k, _default_workers(workers))
        return cls(rows, mean, np.sqrt(var))


def _as_reference(reference: Any, workers: int | None) -> SortedReference:
    return reference if isinstance(reference, SortedReference) else SortedReference.from_scores(reference, workers)


def _ks_chunk(ref_rows: np.ndarray, cur_cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max of ``F_ref - F_cur`` and max of ``F_cur - F_ref`` over the pooled values, for a chunk of
    concepts (``ref_rows`` sorted ``(b, n1)``, ``cur_cols`` unsorted ``(n2, b)``).

    Both ECDFs are step functions, so the difference reaches its maximum just before or at a
    window value and its minimum at a window value. Evaluating both at every window value with the
    same integer counts scipy uses gives scipy's statistic bit for bit, ties included.
    """
    r = ref_rows
    n1, n2 = r.shape[1], cur_cols.shape[0]
    c = np.ascontiguousarray(cur_cols.T, dtype=np.result_type(r.dtype, cur_cols.dtype))
    c.sort(axis=1)
    b = r.shape[0]
    ref_below = np.empty((b, n2), dtype=np.int64)
    for i in range(b):
        ref_below[i] = np.searchsorted(r[i], c[i], side="left")
    # baseline values equal to a window value (ties across sides): count them with a right search
    tied = (np.take_along_axis(r, np.minimum(ref_below, n1 - 1), axis=1) == c) & (ref_below < n1)
    ref_upto = ref_below.copy()
    for i in np.flatnonzero(tied.any(axis=1)):
        cols = np.flatnonzero(tied[i])
        ref_upto[i, cols] = np.searchsorted(r[i], c[i, cols], side="right")
    cur_below, cur_upto = _run_bounds(c)
    before = ref_below / n1 - cur_below / n2  # value at the pooled point just below each window value
    at = ref_upto / n1 - cur_upto / n2  # value at each window value
    max_s = np.maximum(np.maximum(before.max(axis=1), at.max(axis=1)), 0.0)
    min_d = np.minimum(before.min(axis=1), at.min(axis=1))
    return max_s, np.clip(-min_d, 0.0, 1.0)


def _ks_statistics(ref: SortedReference, current: np.ndarray, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided statistic and sign for every concept, chunks of concepts on ``workers`` threads."""
    stat = np.empty(ref.k)
    sign = np.empty(ref.k, dtype=np.int8)

    def run(j0: int, j1: int) -> None:
        max_s, min_s = _ks_chunk(ref.sorted_scores[j0:j1], current[:, j0:j1])
        down = min_s > max_s
        stat[j0:j1] = np.where(down, min_s, max_s)
        sign[j0:j1] = np.where(down, -1, 1)

    _threaded(run, ref.k, workers)
    return stat, sign


_PI2, _PI4, _PI6 = np.pi**2, np.pi**4, np.pi**6
_SQRT2PI, _SQRT3 = np.sqrt(2 * np.pi), np.sqrt(3)


def _pelz_good_cdf(n: int, x: np.ndarray) -> np.ndarray:
    """Pelz-Good approximation of P(D_n <= x), vectorised; the same arithmetic as scipy's
    ``scipy.stats._ksstats._kolmogn_PelzGood`` (Simard & L'Ecuyer 2011), for 0 < x < 1 with
    z = sqrt(n) x above 0.0418."""
    z = np.sqrt(n) * x
    z2, z3, z4, z6 = z**2, z**3, z**4, z**6
    q = np.exp(-_PI2 / 8 / z2)
    k1a, k1b = -z2, _PI2 / 4
    k2a = 6 * z6 + 2 * z4
    k2b = (2 * z4 - 5 * z2) * _PI2 / 4
    k2c = _PI4 * (1 - 2 * z2) / 16
    k3d = _PI6 * (5 - 30 * z2) / 64
    k3c = _PI4 * (-60 * z2 + 212 * z4) / 16
    k3b = _PI2 * (135 * z4 - 96 * z6) / 4
    k3a = -30 * z6 - 90 * z**8
    maxk = np.ceil(16 * z / np.pi).astype(np.int64)
    K = np.zeros((4,) + x.shape)
    for k in range(int(maxk.max(initial=0)), 0, -1):  # Horner over odd m = 2k - 1
        on = k <= maxk
        m2 = float((2 * k - 1) ** 2)
        qp = np.power(q, 8 * k)
        coeffs = (1.0, k1a + k1b * m2, k2a + k2b * m2 + k2c * m2**2, k3a + k3b * m2 + k3c * m2**2 + k3d * m2**3)
        for i, c in enumerate(coeffs):
            K[i] = np.where(on, K[i] * qp + c, K[i])
    K *= q
    K *= _SQRT2PI
    K /= np.stack([z, 6 * z4, 72 * z**7, 6480 * z**10])
    q2 = np.exp(-_PI2 / 2 / z2)
    k2extra = np.zeros_like(x)
    k3extra = np.zeros_like(x)
    s3z = _SQRT3 * z
    for k in range(int(maxk.max(initial=0)), 0, -1):
        on = k <= maxk
        qk = q2 ** (k * k)
        k2extra = np.where(on, k2extra + (k * k) * qk, k2extra)
        k3extra = np.where(on, k3extra + (s3z + np.pi * k) * (s3z - np.pi * k) * (k * k) * qk, k3extra)
    K[2] += k2extra * (_PI2 * _SQRT2PI / (-36 * z3))
    K[3] += k3extra * (_PI2 * _SQRT2PI / (216 * z6))
    K /= np.power(n * 1.0, np.arange(4) / 2.0)[:, None]
    return K[0] + K[1] + K[2] + K[3]


def smirnov_sf(n: int, x: np.ndarray, block: int = 32) -> np.ndarray:
    """``scipy.special.smirnov(n, x)``, P(D+_n > x), for an array of x, vectorised.

    The Birnbaum-Tingey sum ``x * sum_j C(n, j) (1 - x - j/n)^(n - j) (x + j/n)^(j - 1)`` over
    j <= n (1 - x), in log space with the binomial coefficients shared by all x. scipy sums the
    same series one x at a time in double-double arithmetic (about 20 ms per value at n ~ 10^4);
    this agrees with it to ~1e-11 relative. Beyond n = 10^6 scipy switches to an approximation,
    and so does this (by calling it).
    """
    x = np.asarray(x, dtype=np.float64)
    if n > 1_000_000 or x.size == 0:
        return special.smirnov(n, x)
    j = np.arange(n + 1, dtype=np.float64)
    log_binom = special.gammaln(n + 1.0) - special.gammaln(j + 1) - special.gammaln(n - j + 1)
    out = np.empty_like(x)
    for s in range(0, x.size, block):
        xb = x[s : s + block, None]
        u = xb + j / n
        with np.errstate(divide="ignore", invalid="ignore"):
            log_terms = log_binom + (n - j) * np.log1p(-u) + (j - 1) * np.log(u)
        log_terms = np.where(u < 1, log_terms, -np.inf)
        top = log_terms.max(axis=1, keepdims=True)
        out[s : s + block] = x[s : s + block] * np.exp(top[:, 0] + np.log(np.exp(log_terms - top).sum(axis=1)))
    return out


def kstwo_sf(d: np.ndarray, n: int) -> np.ndarray:
    """``scipy.stats.kstwo.sf(d, n)`` for an array of statistics, vectorised.

    scipy evaluates this distribution one element at a time (1-20 ms each at n ~ 10^4). Here the
    two branches of scipy's ``_kolmogn`` that cover almost every audit run as array code with the
    same formulas: ``2 * smirnov(n, d)`` where n d^2 >= 2.2 (every p below ~0.02; ``smirnov_sf``),
    and the Pelz-Good series where n > 140 and n d^2 < 2.2. The remaining corners (n <= 140, the
    Durbin-matrix region where p ~ 1, degenerate d) go to ``scipy.stats.kstwo.sf`` itself.
    """
    d = np.asarray(d, dtype=np.float64)
    out = np.empty_like(d)
    t = n * d
    nx2 = t * d
    inner = (d > 0) & (d < 1) & (t > 1) & (t < n - 1)
    smirnov = inner & ((d >= 0.5) | ((n > 140) & (nx2 >= 2.2) & (nx2 < 370)))
    zero = inner & (d < 0.5) & (n > 140) & (nx2 >= 370)
    pelz = inner & (d < 0.5) & (n > 140) & (nx2 < 2.2) & ~((n <= 100_000) & (n * d**1.5 <= 1.4))
    pelz &= np.sqrt(n) * d > 0.0418  # below, scipy's series underflows to cdf = 0 (sf = 1)
    rest = ~(smirnov | zero | pelz)
    out[smirnov] = 2 * smirnov_sf(n, d[smirnov])
    out[zero] = 0.0
    out[pelz] = 1.0 - _pelz_good_cdf(n, d[pelz])
    if rest.any():
        out[rest] = kstwo.sf(d[rest], n)
    return np.clip(out, 0.0, 1.0)


def _resolve_method(n1: int, n2: int, method: str) -> str:
    """The method scipy's ks_2samp uses for these sizes (its 'auto' rule and exact-size guard)."""
    if method not in ("auto", "exact", "asymp"):
        raise ValueError(f"method must be 'auto', 'exact' or 'asymp', got {method!r}")
    if method == "auto":
        return "exact" if max(n1, n2) <= _MAX_AUTO_N else "asymp"
    g = math.gcd(n1, n2)
    if method == "exact" and n1 // g >= np.iinfo(np.int32).max / (n2 // g):
        warnings.warn(
            f"exact KS is not possible with sample sizes {n1} and {n2}; using 'asymp'", RuntimeWarning, stacklevel=3
        )
        return "asymp"
    return method


def ks_2samp_batched(reference: Any, current: Any, method: str = "auto", workers: int | None = None) -> KSBatch:
    """Two-sample two-sided KS test of every concept (column) at once.

    ``reference`` is ``(n_ref, k)`` or a ``SortedReference`` and ``current`` ``(n_cur, k)``
    (numpy, torch or lists; a 1-d input is one concept). Each side is sorted once per concept
    (the baseline not at all when prepared); one ``searchsorted`` per concept
    counts baseline scores below each window score, and everything else is array code across
    concepts. The statistic equals scipy's exactly, ties included (it is evaluated with scipy's own
    integer counts, only where the pooled values change).

    ``method`` follows ``scipy.stats.ks_2samp``: 'auto' is exact when both sides have at most
    10,000 samples, else asymptotic. The asymptotic p-value ``kstwo.sf(d, round(n1 n2 / (n1 + n2)))``
    is vectorised (``kstwo_sf``). The exact p-value calls scipy's own internal
    ``_attempt_exact_2kssamp`` once per concept (it is a lattice-path count with no array form);
    as in scipy, its statistic is rounded to a multiple of 1/lcm(n1, n2), and a concept whose exact
    computation fails falls back to the asymptotic p-value with a RuntimeWarning. ``workers``
    threads (default: up to 2) process chunks of concepts.
    """
    workers = _default_workers(workers)
    ref = _as_reference(reference, workers)
    cur = _check_current(current, ref)
    n1, n2 = ref.n, cur.shape[0]
    mode = _resolve_method(n1, n2, method)
    stat, sign = _ks_statistics(ref, cur, workers)
    asymp = np.ones(stat.shape, dtype=bool)
    pvalue = np.empty_like(stat)
    if mode == "exact":
        from scipy.stats._stats_py import _attempt_exact_2kssamp  # scipy's exact path, no public API

        g = math.gcd(n1, n2)
        for j in range(stat.size):
            ok, stat[j], p = _attempt_exact_2kssamp(n1, n2, g, float(stat[j]), "two-sided")
            asymp[j] = not ok
            pvalue[j] = p
        if asymp.any():
            warnings.warn(
                f"exact KS failed for {int(asymp.sum())} concepts; used the asymptotic p-value for them",
                RuntimeWarning,
                stacklevel=2,
            )
    if asymp.any():
        m, n = sorted([float(n1), float(n2)], reverse=True)
        pvalue[asymp] = kstwo_sf(stat[asymp], int(np.round(m * n / (m + n))))
    return KSBatch(stat, np.clip(pvalue, 0.0, 1.0), sign)


# --------------------------------------------------------------------------------------------
# Multiple-testing corrections


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values): flagging q <= alpha controls the false
    discovery rate at alpha. Same as ``scipy.stats.false_discovery_control(p, method='bh')``."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.empty(m)
    q[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return np.clip(q, 0.0, 1.0)


def bonferroni(pvalues: np.ndarray) -> np.ndarray:
    """Bonferroni adjusted p-values, ``min(1, m p)``: flagging <= alpha controls the chance of any
    false flag in the bank at alpha."""
    p = np.asarray(pvalues, dtype=np.float64)
    return np.minimum(p * p.size, 1.0)


_CORRECTIONS = {"bh": benjamini_hochberg, "bonferroni": bonferroni}


# --------------------------------------------------------------------------------------------
# Typed results


@dataclass(frozen=True)
class ConceptDrift:
    """One concept's audit line. ``effect`` is the mean shift in score units (window minus
    baseline); ``effect_size`` is that shift in baseline standard deviations; ``direction`` is
    +1 ("more of the concept") or -1 ("less"); ``rank`` is 1 for the largest flagged effect."""

    name: str
    index: int
    ks_stat: float
    p_value: float
    q_value: float
    mean_ref: float
    mean_cur: float
    std_ref: float
    effect: float
    effect_size: float
    direction: int
    flagged: bool
    rank: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftResult:
    """A whole audit: every concept in bank order, the flagged ones ranked by effect, and the
    settings that decided it, so a stored result can be re-read without the detector."""

    concepts: list[ConceptDrift]
    flagged: list[ConceptDrift]
    params: dict[str, Any]
    n_ref: int
    n_cur: int
    detector: str = "ks"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain floats, ints, strings and lists."""
        return {
            "detector": self.detector,
            "n_ref": self.n_ref,
            "n_cur": self.n_cur,
            "params": dict(self.params),
            "flagged": [c.name for c in self.flagged],
            "concepts": [c.to_dict() for c in self.concepts],
        }


# --------------------------------------------------------------------------------------------
# Correct and decide


class ConceptDriftDetector:
    """Shared work of per-concept drift detectors: validate, score (the subclass hook), correct
    across the bank, gate by effect size, give directions, rank.

    A concept is flagged when all three hold:

    * its corrected p-value (``correction``: 'bh' q-value, or 'bonferroni') is <= ``alpha``;
    * its KS statistic (largest gap between the two ECDFs) is >= ``min_ks``;
    * its mean shift is >= ``min_effect_size`` baseline standard deviations (Glass's delta).

    The effect unit is the baseline's standard deviation rather than a pooled one because the
    baseline is the fixed yardstick of every audit against it: the same threshold means the same
    score change in every window, and a shift that also widens the window's spread (a few images
    strongly expressing a concept) is not shrunk by that widening.

    Defaults and why. ``alpha=0.005`` with BH: when nothing changed, BH flags anything at all
    with probability about ``alpha`` per audit (it controls the family-wise error under the global
    null), so 20 clean audits give ~0.1 expected false alarms. In simulated correlated banks
    (1000 concepts, 100k baseline, 1k windows) ``alpha=0.01`` gave 2 single false flags in 20
    audits, both with q just under 0.01: concepts share each window's images and the baseline is
    reused, so the realised rate is noisier than the nominal one; halving alpha costs nothing for
    real shifts, whose q-values are orders of magnitude smaller. ``min_ks=0.02`` and
    ``min_effect_size=0.1``: a window in which 3-5 % of images strongly express a concept
    (+4 baseline SD) moves that concept's ECDF by about that fraction and its mean by 0.12-0.2
    SD, which passes both gates and, with 10k window images against a 100k baseline, reaches
    q < 1e-7. A nudge of every embedding by 0.05-0.08 SD is significant at such n but stays below
    the effect gate. A KS gate of 0.1 would hide few-percent shifts entirely, because KS can never
    exceed the fraction of images that moved. Pure spread changes with no mean shift are not
    flagged; set ``min_effect_size=0`` to catch them. At 1k window images only shifts of about
    0.15 SD and more reach significance across a 1000-concept bank.
    """

    name = "base"

    def __init__(
        self,
        alpha: float = 0.005,
        correction: str = "bh",
        min_ks: float = 0.02,
        min_effect_size: float = 0.1,
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if correction not in _CORRECTIONS:
            raise ValueError(f"correction must be one of {sorted(_CORRECTIONS)}, got {correction!r}")
        if not 0 <= min_ks <= 1:
            raise ValueError(f"min_ks must be in [0, 1], got {min_ks}")
        if min_effect_size < 0:
            raise ValueError(f"min_effect_size must be >= 0 baseline standard deviations, got {min_effect_size}")
        self.alpha = alpha
        self.correction = correction
        self.min_ks = min_ks
        self.min_effect_size = min_effect_size

    def params(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "correction": self.correction,
            "min_ks": self.min_ks,
            "min_effect_size": self.min_effect_size,
        }

    def score(self, reference: SortedReference, current: np.ndarray) -> KSBatch:
        """Per-concept statistic, p-value and sign; the one thing a subclass provides."""
        raise NotImplementedError

    def detect(
        self, reference_scores: Any, current_scores: Any, concept_names: Sequence[str] | None = None
    ) -> DriftResult:
        """Audit a window (``current_scores``, ``(n_cur, k)``) against a baseline sample
        (``reference_scores``, ``(n_ref, k)`` or a ``SortedReference`` prepared once for many
        audits); ``concept_names`` label the k columns."""
        ref = _as_reference(reference_scores, None)
        cur = _check_current(current_scores, ref)
        k = ref.k
        names = [f"concept_{j}" for j in range(k)] if concept_names is None else [str(n) for n in concept_names]
        if len(names) != k:
            raise ValueError(f"concept_names has {len(names)} names for {k} scored concepts: give one name per column")
        scored = self.score(ref, cur)
        q = _CORRECTIONS[self.correction](scored.pvalue)
        mean_ref, std_ref = ref.mean, ref.std
        mean_cur = cur.mean(axis=0, dtype=np.float64)
        effect = mean_cur - mean_ref
        with np.errstate(divide="ignore", invalid="ignore"):
            size = np.where(std_ref > 0, effect / std_ref, np.where(effect == 0, 0.0, np.sign(effect) * np.inf))
        direction = np.where(effect > 0, 1, np.where(effect < 0, -1, scored.sign)).astype(int)
        flagged = (q <= self.alpha) & (scored.statistic >= self.min_ks) & (np.abs(size) >= self.min_effect_size)
        order = sorted(np.flatnonzero(flagged), key=lambda j: (-abs(size[j]), -scored.statistic[j], j))
        rank = {int(j): r for r, j in enumerate(order, start=1)}
        concepts = [
            ConceptDrift(
                name=names[j],
                index=j,
                ks_stat=float(scored.statistic[j]),
                p_value=float(scored.pvalue[j]),
                q_value=float(q[j]),
                mean_ref=float(mean_ref[j]),
                mean_cur=float(mean_cur[j]),
                std_ref=float(std_ref[j]),
                effect=float(effect[j]),
                effect_size=float(size[j]),
                direction=int(direction[j]),
                flagged=bool(flagged[j]),
                rank=rank.get(j),
            )
            for j in range(k)
        ]
        return DriftResult(
            concepts=concepts,
            flagged=[concepts[j] for j in order],
            params=self.params(),
            n_ref=ref.n,
            n_cur=cur.shape[0],
            detector=self.name,
        )


class KSDriftDetector(ConceptDriftDetector):
    """Per-concept two-sample KS audit (see ``ConceptDriftDetector`` for the decision rule).
    ``method`` is scipy's: 'auto', 'exact' or 'asymp'."""

    name = "ks"

    def __init__(self, *args: Any, method: str = "auto", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _resolve_method(MIN_SAMPLES, MIN_SAMPLES, method)  # validates the name
        self.method = method

    def params(self) -> dict[str, Any]:
        return {**super().params(), "method": self.method}

    def score(self, reference: SortedReference, current: np.ndarray) -> KSBatch:
        return ks_2samp_batched(reference, current, method=self.method)


# --------------------------------------------------------------------------------------------
# Drift direction and baselines


def drift_direction(reference_mean: np.ndarray, current_embeddings: np.ndarray) -> tuple[np.ndarray, float]:
    """Window mean minus baseline mean of aligned unit vectors, and its norm.

    The rows of ``current_embeddings`` are normalised to unit length first (the baseline mean is
    a mean of unit vectors too), so the vector points from the baseline's centre towards the
    window's in the CLIP space, ready to be decoded into text.
    """
    mean = np.asarray(reference_mean, dtype=np.float64)
    emb = _as_scores(current_embeddings, "current_embeddings").astype(np.float64, copy=False)
    if mean.ndim != 1:
        raise ValueError(f"reference_mean must be 1-d (d,), got shape {mean.shape}")
    if not np.isfinite(mean).all():
        raise ValueError("reference_mean has NaN/inf entries: recompute the baseline mean")
    if emb.shape[1] != mean.shape[0]:
        raise ValueError(
            f"current_embeddings have width {emb.shape[1]} but reference_mean has {mean.shape[0]}: "
            "use embeddings aligned into the baseline's CLIP space"
        )
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("current_embeddings has all-zero rows: drop them, they have no direction")
    direction = (emb / norms).mean(axis=0) - mean
    return direction, float(np.linalg.norm(direction))


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
