"""Deciding which concepts drifted: the detectors, their multiple-testing corrections and typed result.

Plain KS on cosine similarities cries wolf: at large n it finds negligible shifts significant,
and one shift of the embeddings moves many correlated concepts at once. So a detector scores every
concept (``KSDriftDetector``: a two-sample KS test, ``ks.ks_2samp_batched``), corrects across the
bank (Benjamini-Hochberg q-values by default, or Bonferroni; ``Correction``), flags only shifts
that are also large enough to matter (a minimum KS statistic AND a minimum mean shift in baseline
standard deviations), and reports the direction of each shift, ranking flagged concepts by effect
size.

The layout follows alibi-detect's univariate drift detectors: ``ConceptDriftDetector`` holds the
shared work (validation, correction, decision, typed result) and a subclass only scores each
concept (``KSDriftDetector.score``). Every detector returns the same ``DriftResult`` so one table
fits all. ``drift_direction`` gives the embedding-space direction of a window's shift for decoding
back to text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import false_discovery_control

from t2c_monitor.drift.ks import KSBatch, KSMethod, check_method, ks_2samp_batched
from t2c_monitor.drift.reference import SortedReference, as_reference, check_current
from t2c_monitor.drift.validation import as_scores

Correction = Literal["bh", "bonferroni"]
"""How p-values are corrected across the bank: Benjamini-Hochberg q-values or Bonferroni."""


# --------------------------------------------------------------------------------------------
# Multiple-testing corrections


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values): flagging q <= alpha controls the false
    discovery rate at alpha. ``scipy.stats.false_discovery_control(p, method='bh')`` on a float64
    copy of ``pvalues`` (which must lie in [0, 1])."""
    return false_discovery_control(np.array(pvalues, dtype=np.float64), method="bh")


def bonferroni(pvalues: np.ndarray) -> np.ndarray:
    """Bonferroni adjusted p-values, ``min(1, m p)``: flagging <= alpha controls the chance of any
    false flag in the bank at alpha."""
    p = np.asarray(pvalues, dtype=np.float64)
    return np.minimum(p * p.size, 1.0)


_CORRECTIONS: dict[Correction, Callable[[np.ndarray], np.ndarray]] = {
    "bh": benjamini_hochberg,
    "bonferroni": bonferroni,
}


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
        correction: Correction = "bh",
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
        ref = as_reference(reference_scores, None)
        cur = check_current(current_scores, ref)
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

    def __init__(self, *args: Any, method: KSMethod = "auto", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.method = check_method(method)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "method": self.method}

    def score(self, reference: SortedReference, current: np.ndarray) -> KSBatch:
        return ks_2samp_batched(reference, current, method=self.method)


# --------------------------------------------------------------------------------------------
# Drift direction


def drift_direction(reference_mean: np.ndarray, current_embeddings: np.ndarray) -> tuple[np.ndarray, float]:
    """Window mean minus baseline mean of aligned unit vectors, and its norm.

    The rows of ``current_embeddings`` are normalised to unit length first (the baseline mean is
    a mean of unit vectors too), so the vector points from the baseline's centre towards the
    window's in the CLIP space, ready to be decoded into text.
    """
    mean = np.asarray(reference_mean, dtype=np.float64)
    emb = as_scores(current_embeddings, "current_embeddings").astype(np.float64, copy=False)
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
