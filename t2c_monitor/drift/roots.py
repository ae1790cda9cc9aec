"""Root causes among flagged concepts, a test of the aligned vectors themselves, and drift no concept names.

Concept scores move together: more night images raise the scores of "black", "orange" and
"brick" too, so the per-concept KS tests flag a cause and its echoes alike. ``explain_shift``
finds the few flagged concepts that explain the whole shift, says which root each other flagged
concept moves with, tests the aligned vectors as a whole, and says when part of the shift is
something the bank does not name.

The method: a sparse attribution of the window's mean shift in the aligned space, with each
concept's effect estimated on the baseline.

* **The shift** is the window's mean aligned vector minus the baseline's, in the baseline's
  principal components (``max_dims`` at most, 99% of the variance) scaled to unit noise:
  ``z = Λ^-1/2 Eᵀ (mean_w - mean_b) / sqrt(1/n_w + 1/n_b)``. Under no shift ``|z|²`` is
  Hotelling's T² with the baseline's covariance, so ``VectorTest`` is an F test that needs no
  concept at all (calibrated: the baseline's mean and covariance are independent of the window).
* **A concept's effect** ("what more of c looks like") is the mean aligned vector of the 20% of
  baseline images that express c most, minus the baseline mean: an estimate of adding c-images.
  Images are ranked by their score *relative to their mean score over the bank*: CLIP gives some
  images high similarity to every text, and ranking by raw score made "large" mean "any image
  with high scores" (AUROC of the size concepts against the shapes world's truth 0.71 raw, 0.95
  relative).
* **Roots** are chosen by forward selection: the flagged concept whose effect direction most
  reduces the unexplained ``|z|²`` joins, if the reduction is significant (chi-square, 1 degree of
  freedom, ``alpha`` over the candidates), at least ``min_share`` of the shift beyond noise
  (``|z|²`` less its dimension, what noise alone gives on average), and its sign
  agrees with the concept's own KS direction. When a "less X" and a "more Y" explain the shift
  equally well (their fits differ by less than the test's threshold), or Y is X's other side
  (their effects point apart, cosine <= -0.5, and Y explains at least half as much, as "fewer
  small objects" and "more large ones"), the root is named by what grew. Then each root is swapped
  for another candidate while that fits significantly better beside the other roots (forward
  selection alone would keep a concept that sees two causes at once, "dark" for night and fog),
  and a root that no longer adds what a newcomer must is dropped. Each other flagged concept is an
  echo of the root whose fitted effect moves its score most in the way it moved.
* **Unlisted drift**: after the roots (their effects by relative and by raw score) the residual
  shift is tested again. When the vectors shifted, the residual is significant, and it is at
  least ``unlisted_share`` of the shift beyond noise, the audit reports drift the bank does not explain,
  with the residual direction to decode into words.

Why this method (measured on the shapes world, 4,000 baseline and 500 window images, 21 single
shifts of every factor both ways and 6 pairs; full figures in ``bench/world.py``). Conditioning
each concept's scores on the roots' scores (regression residuals, linear or binned) reached 0.82
precision and 0 of 6 pairs: a concept score is a noisy detector (shapes' AUROC 0.7-0.8), so
conditioning on it leaves much of each echo unexplained. The same selection on concept *score*
profiles of raw scores reached 0.93 precision and 4 of 6 pairs; in the aligned space with
relative-score profiles: precision 34/35, first root right 21/21, pairs 6/6, and no root in 20
clean audits. On ``drift_check``'s scenarios (other seeds): first root 19/19, precision 0.97,
pairs 4/4, unlisted drift named 4/4, no flag in 20 clean audits; on 14 other shifts and
strengths, 4 other pairs and 1,000-image windows: 14/14, 0.96, 4/4, 3/4, none in 10. The
remaining wrong roots are "black" beside blur: the blur concept is the bank's weakest detector
(AUROC 0.76 by relative score), so its effect leaves a dark part of blurred images unexplained.
Its cost is a few small matrix products per audit (60 ms at 1,000 concepts, ``bench/drift.py``),
independent of the window size beyond its mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import chi2
from scipy.stats import f as f_dist

from t2c_monitor.drift.detector import DriftResult
from t2c_monitor.drift.root_selection import select_roots


@dataclass(frozen=True)
class RootSettings:
    """How roots and unlisted drift are decided (a monitor's ``audit`` settings hold them)."""

    alpha: float = 0.005
    """Level of each root's test (its reduction of the shift, corrected over the candidates)."""
    vector_alpha: float = 0.001
    """Level of the vector test and of the residual test behind an 'unlisted' finding. It is run
    with every audit, so clean audits see it fire at about this rate; the shifts it is for are
    far beyond it (T² in the hundreds where its threshold is near 70)."""
    min_share: float = 0.1
    """A root explains at least this share of the whole shift (``|z|²``)."""
    quantile: float = 0.2
    """A concept's effect is estimated from this top share of baseline images by relative score."""
    unlisted_share: float = 0.6
    """Drift is 'unlisted' when at least this share of the shift is left after the roots."""
    max_dims: int = 64
    """Principal components of the baseline the shift is measured in (fewer when 99% of the
    variance needs fewer, or the baseline sample is small)."""
    max_candidates: int = 50
    """Flagged concepts considered as roots, by effect size (a 1,000-concept bank stays fast)."""

    def __post_init__(self) -> None:
        for name in ("alpha", "vector_alpha", "min_share", "quantile", "unlisted_share"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if self.max_dims < 1 or self.max_candidates < 1:
            raise ValueError("max_dims and max_candidates must be >= 1")


@dataclass(frozen=True)
class VectorTest:
    """Hotelling's T² of the window's mean aligned vector against the baseline, as an F test."""

    statistic: float  # T² = |z|²
    p_value: float
    dims: int
    n_ref: int
    n_cur: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Root:
    """A cause of the shift: a flagged concept, which way it moved, the share of the shift its
    effect explains (dropping it from the fit leaves that much more), and its echoes."""

    name: str
    index: int
    direction: int
    share: float
    echoes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ShiftExplanation:
    """Roots, echoes, the vector test and what is left unexplained, for one audit."""

    roots: list[Root]
    echoes: dict[str, str]  # flagged concept -> the root it moves with
    vector_test: VectorTest
    explained_share: float  # of |z|², by the roots
    residual_share: float  # of |z|², after the roots (relative and raw effects)
    residual_p_value: float
    unlisted: bool
    residual: np.ndarray  # (d,) the unexplained part of the mean shift, in the aligned space
    params: dict[str, Any]

    @property
    def shifted(self) -> bool:
        return self.vector_test.p_value <= self.params["vector_alpha"]

    @classmethod
    def from_dict(cls, data: dict[str, Any], residual: np.ndarray | None) -> ShiftExplanation | None:
        """An explanation as ``to_dict`` stored it (None when the audit has none)."""
        if not data or "vector_test" not in data:
            return None
        return cls(
            roots=[Root(**r) for r in data["roots"]], echoes=dict(data["echoes"]),
            vector_test=VectorTest(**data["vector_test"]), explained_share=data["explained_share"],
            residual_share=data["residual_share"], residual_p_value=data["residual_p_value"],
            unlisted=data["unlisted"], residual=residual if residual is not None else np.zeros(0),
            params=dict(data["params"]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the residual direction is not included: it is stored as a vector)."""
        return {
            "roots": [r.to_dict() for r in self.roots],
            "echoes": dict(self.echoes),
            "vector_test": self.vector_test.to_dict(),
            "explained_share": self.explained_share,
            "residual_share": self.residual_share,
            "residual_p_value": self.residual_p_value,
            "unlisted": self.unlisted,
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class _Space:
    """The baseline's principal components, where shifts are measured with unit noise."""

    mean: np.ndarray  # (d,)
    basis: np.ndarray  # (d, r)
    scale: np.ndarray  # (r,) standard deviation along each component

    def whiten(self, vectors: np.ndarray) -> np.ndarray:
        """Directions (columns ``(d, m)`` or one ``(d,)``) in unit-noise coordinates."""
        out = self.basis.T @ vectors
        return out / (self.scale[:, None] if out.ndim == 2 else self.scale)

    def unwhiten(self, z: np.ndarray) -> np.ndarray:
        return self.basis @ (z * self.scale)


def whitened_space(baseline: np.ndarray, max_dims: int) -> _Space:
    mean = baseline.mean(axis=0)
    centred = baseline - mean
    # eigenvectors of the covariance through an SVD of the centred sample (no d x d product)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    var = sing**2 / (baseline.shape[0] - 1)
    keep = int(np.searchsorted(np.cumsum(var) / var.sum(), 0.99)) + 1
    keep = max(1, min(keep, max_dims, baseline.shape[0] // 20, int((var > var[0] * 1e-8).sum())))
    return _Space(mean=mean, basis=vt[:keep].T, scale=np.sqrt(var[:keep]))


def vector_test(baseline: np.ndarray, current: np.ndarray, *, max_dims: int = 64) -> VectorTest:
    """Has the window's mean aligned vector moved? Hotelling's T² in the baseline's principal
    components with the baseline's covariance; ``T² (n-r)/(r(n-1))`` is F(r, n-r) under no shift
    (n baseline rows, r components)."""
    ref, cur = _check_vectors(baseline, current)
    space = whitened_space(ref, max_dims)
    return _vector_test(space, ref.shape[0], cur.shape[0], _shift(space, ref.shape[0], cur))


def _check_vectors(baseline: Any, current: Any) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(baseline, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != cur.shape[1]:
        raise ValueError(f"baseline and window vectors must be (n, d) of one width, got {ref.shape} and {cur.shape}")
    if ref.shape[0] < 40 or cur.shape[0] < 2:
        raise ValueError(f"need at least 40 baseline and 2 window vectors, got {ref.shape[0]} and {cur.shape[0]}")
    if not (np.isfinite(ref).all() and np.isfinite(cur).all()):
        raise ValueError("aligned vectors hold NaN or inf: re-ingest the batches that produced them")
    return ref, cur


def _shift(space: _Space, n_ref: int, current: np.ndarray) -> np.ndarray:
    noise = np.sqrt(1.0 / current.shape[0] + 1.0 / n_ref)
    return space.whiten(current.mean(axis=0) - space.mean) / noise


def _vector_test(space: _Space, n_ref: int, n_cur: int, z: np.ndarray) -> VectorTest:
    r = space.basis.shape[1]
    t2 = float(z @ z)
    p = float(f_dist.sf(t2 * (n_ref - r) / (r * (n_ref - 1)), r, n_ref - r)) if n_ref > r else 1.0
    return VectorTest(statistic=t2, p_value=p, dims=r, n_ref=n_ref, n_cur=n_cur)


def _effects(baseline: np.ndarray, space: _Space, scores: np.ndarray, quantile: float) -> np.ndarray:
    """Each column of ``scores`` (n, m): the mean baseline vector of its top ``quantile`` rows minus
    the baseline mean, ``(d, m)``."""
    n = baseline.shape[0]
    top = max(int(round(quantile * n)), 5)
    rows = np.argpartition(-scores, top - 1, axis=0)[:top]  # (top, m)
    return baseline[rows].mean(axis=0).T - space.mean[:, None]


def explain_shift(baseline: Any, current: Any, concept_vectors: Any, result: DriftResult,
                  settings: RootSettings | None = None) -> ShiftExplanation:
    """Roots, echoes and unlisted drift of an audit.

    ``baseline`` and ``current`` are aligned unit vectors (a baseline sample ``(n_ref, d)`` and the
    window ``(n_cur, d)``), ``concept_vectors`` the bank ``(k, d)`` in the order of
    ``result.concepts`` (the per-concept audit of the same data).
    """
    settings = settings or RootSettings()
    ref, cur = _check_vectors(baseline, current)
    bank = np.asarray(concept_vectors, dtype=np.float64)
    if bank.ndim != 2 or bank.shape[1] != ref.shape[1] or bank.shape[0] != len(result.concepts):
        raise ValueError(f"concept_vectors must be ({len(result.concepts)}, {ref.shape[1]}), got {bank.shape}")
    space = whitened_space(ref, settings.max_dims)
    z = _shift(space, ref.shape[0], cur)
    noise = np.sqrt(1.0 / cur.shape[0] + 1.0 / ref.shape[0])
    test = _vector_test(space, ref.shape[0], cur.shape[0], z)
    total = float(z @ z)
    dims = space.basis.shape[1]
    signal = max(total - dims, 1e-12)  # |z|² less what noise alone gives on average (its dimension)
    params = asdict(settings)

    candidates = result.flagged[: settings.max_candidates]
    roots: list[int] = []  # positions in candidates
    coef = np.zeros(0)
    if candidates:
        index = [c.index for c in candidates]
        sign = np.array([c.direction for c in candidates])
        relative = ref @ (bank[index] - bank.mean(axis=0)).T
        effects = _effects(ref, space, relative, settings.quantile)  # (d, m)
        w = space.whiten(effects) / noise
        roots, coef = select_roots(w, z, sign, signal, settings)
    residual_z, residual_p = z, test.p_value
    explained = 0.0
    if roots:
        chosen = [candidates[i] for i in roots]
        raw = _effects(ref, space, ref @ bank[[c.index for c in chosen]].T, settings.quantile)
        design = np.hstack([w[:, roots], space.whiten(raw) / noise])
        fit, *_ = np.linalg.lstsq(design, z, rcond=None)
        residual_z = z - design @ fit
        dof = max(dims - design.shape[1], 1)
        residual_p = float(chi2.sf(float(residual_z @ residual_z), dof))
        base = z - w[:, roots] @ coef
        explained = min(max((total - float(base @ base)) / signal, 0.0), 1.0)
    else:
        dof = dims
    residual_share = min(max((float(residual_z @ residual_z) - dof) / signal, 0.0), 1.0)
    unlisted = (test.p_value <= settings.vector_alpha and residual_p <= settings.vector_alpha
                and residual_share >= settings.unlisted_share)
    root_list, echoes = _name_roots(candidates, roots, coef, w if candidates else None, z, effects if roots else None,
                                    bank, signal)
    return ShiftExplanation(
        roots=root_list, echoes=echoes, vector_test=test, explained_share=explained,
        residual_share=residual_share, residual_p_value=residual_p, unlisted=unlisted,
        residual=space.unwhiten(residual_z) * noise, params=params,
    )


def _name_roots(candidates: Sequence[Any], roots: list[int], coef: np.ndarray, w: np.ndarray | None, z: np.ndarray,
                effects: np.ndarray | None, bank: np.ndarray, signal: float) -> tuple[list[Root], dict[str, str]]:
    """Roots in the order they were chosen (the first alone explains the most), with their shares,
    and each other flagged concept's root."""
    if not roots or w is None or effects is None:
        return [], {}
    design = w[:, roots]
    fit = z - design @ coef
    rss = float(fit @ fit)
    shares = []
    for j in range(len(roots)):
        others = np.delete(design, j, axis=1)
        if others.shape[1]:
            b, *_ = np.linalg.lstsq(others, z, rcond=None)
            rest = z - others @ b
        else:
            rest = z
        shares.append((float(rest @ rest) - rss) / signal)
    # each root's fitted effect on every flagged concept's mean score: coef_r * (concept . effect_r)
    moved = np.stack([coef[j] * (bank[[c.index for c in candidates]] @ effects[:, roots[j]])
                      for j in range(len(roots))])  # (roots, candidates)
    echoes: dict[str, str] = {}
    members: dict[int, list[str]] = {j: [] for j in range(len(roots))}
    for i, concept in enumerate(candidates):
        if i in roots:
            continue
        same_way = moved[:, i] * concept.direction
        j = int(np.argmax(same_way)) if (same_way > 0).any() else int(np.argmax(np.abs(moved[:, i])))
        echoes[concept.name] = candidates[roots[j]].name
        members[j].append(concept.name)
    # a share is measured against the shift beyond noise, while dropping a root also returns the noise along
    # its direction: a strong root's share can pass 1, and is reported as the whole shift (as residual_share)
    out = [Root(name=candidates[roots[j]].name, index=candidates[roots[j]].index,
                direction=int(candidates[roots[j]].direction), share=min(max(shares[j], 0.0), 1.0),
                echoes=members[j])
           for j in range(len(roots))]
    return out, echoes
