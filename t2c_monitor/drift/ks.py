"""Two-sample Kolmogorov-Smirnov tests of every concept at once, with scipy's p-values.

An audit runs one KS test per concept of the bank (hundreds to thousands of columns), and this
module is the product's speed: ``ks_2samp_batched`` scores all concepts together, at least 10x a
loop of ``scipy.stats.ks_2samp`` (``bench/drift.py`` checks it), with the same statistics bit for
bit and the same p-values. Each side is sorted once per concept (a prepared ``SortedReference``
not at all), one ``searchsorted`` per concept counts baseline scores below each window score, and
everything else is array code across concepts, on chunks of concepts on a few threads.

scipy evaluates the KS null distribution one value at a time; ``kstwo_sf`` (with ``smirnov_sf``
and the Pelz-Good series) is the same arithmetic as array code, falling back to scipy itself in
the corners it rarely reaches. ``KSMethod`` names scipy's methods ('auto', 'exact', 'asymp').
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal, NamedTuple, cast, get_args

import numpy as np
from scipy import special
from scipy.stats import kstwo

from t2c_monitor.drift.parallel import default_workers, over_concept_chunks
from t2c_monitor.drift.reference import SortedReference, as_reference, check_current

KSMethod = Literal["auto", "exact", "asymp"]
"""How the p-value is computed, as in ``scipy.stats.ks_2samp``."""

KS_METHODS: tuple[KSMethod, ...] = get_args(KSMethod)

_MAX_AUTO_N = 10_000  # scipy's ks_2samp(method="auto") is exact when max(n1, n2) <= this


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

    over_concept_chunks(run, ref.k, workers)
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


def check_method(method: str) -> KSMethod:
    """``method`` if it is one of ``KS_METHODS``, else a ValueError naming them."""
    if method not in KS_METHODS:
        names = ", ".join(repr(m) for m in KS_METHODS[:-1]) + f" or {KS_METHODS[-1]!r}"
        raise ValueError(f"method must be {names}, got {method!r}")
    return cast(KSMethod, method)


def _resolve_method(n1: int, n2: int, method: str) -> Literal["exact", "asymp"]:
    """The method scipy's ks_2samp uses for these sizes (its 'auto' rule and exact-size guard)."""
    if check_method(method) == "auto":
        return "exact" if max(n1, n2) <= _MAX_AUTO_N else "asymp"
    g = math.gcd(n1, n2)
    if method == "exact" and n1 // g >= np.iinfo(np.int32).max / (n2 // g):
        warnings.warn(
            f"exact KS is not possible with sample sizes {n1} and {n2}; using 'asymp'", RuntimeWarning, stacklevel=3
        )
        return "asymp"
    return "exact" if method == "exact" else "asymp"


def ks_2samp_batched(reference: Any, current: Any, method: KSMethod = "auto", workers: int | None = None) -> KSBatch:
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
    workers = default_workers(workers)
    ref = as_reference(reference, workers)
    cur = check_current(current, ref)
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
