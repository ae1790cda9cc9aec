"""Choosing the roots of a shift among the flagged concepts' effect columns: forward selection, swaps and
pruning by a chi-squared improvement of the fit (``roots.explain_shift`` whitens the effects and names
what is chosen)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import chi2

if TYPE_CHECKING:
    from t2c_monitor.drift.roots import RootSettings

COMPLEMENT_COSINE = 0.5
"""Two concepts whose effects point at least this much apart (cosine <= -0.5, whitened) are the two
sides of one factor, as "small" and "large" (-0.64 in the shapes world; different colours -0.2 to
-0.4): "fewer small" and "more large" are one change, named by what grew."""


def select_roots(w: np.ndarray, z: np.ndarray, sign: np.ndarray, signal: float,
            settings: RootSettings) -> tuple[list[int], np.ndarray]:
    """Roots among the effect columns ``w`` (r, m) explaining ``z``: forward selection, swaps,
    pruning, then naming; returns the chosen columns and their joint coefficients."""
    m = w.shape[1]
    margin = float(chi2.isf(settings.alpha / m, 1))  # a significant improvement of the fit
    threshold = max(margin, settings.min_share * signal)  # what a root must add
    chosen: list[int] = []
    while len(chosen) < min(m, w.shape[0]):
        gain, allowed, _ = _gains(w, z, sign, chosen)
        if not allowed.any():
            break
        best = _named(w, z, sign, chosen, int(np.argmax(np.where(allowed, gain, -np.inf))), margin)
        if gain[best] < threshold:
            break
        chosen.append(best)
    if not chosen:
        return [], np.zeros(0)
    chosen = _prune(w, z, _swap(w, z, sign, chosen, margin), threshold)
    chosen = [_named(w, z, sign, chosen[:j] + chosen[j + 1:], c, margin) for j, c in enumerate(chosen)]
    coef, *_ = np.linalg.lstsq(w[:, chosen], z, rcond=None)
    return chosen, coef


def _gains(w: np.ndarray, z: np.ndarray, sign: np.ndarray, others: list[int]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every column: how much it reduces the unexplained ``|z|²`` beside ``others``, whether it may
    join (its joint coefficient has its concept's sign; not one of ``others``), and its part
    orthogonal to ``others``."""
    if others:
        basis, _ = np.linalg.qr(w[:, others])
        ortho = w - basis @ (basis.T @ w)
        residual = z - basis @ (basis.T @ z)
    else:
        ortho, residual = w, z
    norm2 = np.einsum("ij,ij->j", ortho, ortho)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(norm2 > 1e-12, (ortho.T @ residual) / norm2, 0.0)  # the newcomer's joint coefficient
    allowed = (np.sign(beta) == sign) & (norm2 > 1e-12)
    allowed[others] = False
    return beta**2 * norm2, allowed, ortho


def _named(w: np.ndarray, z: np.ndarray, sign: np.ndarray, others: list[int], best: int, margin: float) -> int:
    """``best``, or for a "less X" the "more Y" that describes the same change: one that fits not
    significantly worse beside ``others``, or X's other side (effects pointing apart, cosine <=
    -COMPLEMENT_COSINE, explaining at least half as much)."""
    if sign[best] > 0:
        return best
    gain, allowed, ortho = _gains(w, z, sign, others)
    allowed[best] = False
    norms = np.sqrt(np.einsum("ij,ij->j", ortho, ortho))
    cosine = (ortho.T @ ortho[:, best]) / np.maximum(norms * norms[best], 1e-300)
    same = gain > gain[best] - margin
    complement = (cosine <= -COMPLEMENT_COSINE) & (gain >= 0.5 * gain[best])
    ties = np.flatnonzero(allowed & (sign > 0) & (same | complement))
    return int(ties[np.argmax(gain[ties])]) if ties.size else best


def _swap(w: np.ndarray, z: np.ndarray, sign: np.ndarray, chosen: list[int], margin: float) -> list[int]:
    """Replace a chosen root by another candidate while that fits the shift significantly better
    (by more than ``margin``) with the other roots kept: forward selection alone takes a concept
    that sees two causes at once ("dark" for night and fog) before the causes' own concepts, and
    then keeps it."""
    chosen = list(chosen)
    for _ in range(4 * len(chosen)):
        swapped = False
        for pos in range(len(chosen)):
            others = chosen[:pos] + chosen[pos + 1:]
            gain, allowed, _ = _gains(w, z, sign, others)
            allowed[chosen[pos]] = False
            if not allowed.any():
                continue
            best = int(np.argmax(np.where(allowed, gain, -np.inf)))
            if gain[best] > gain[chosen[pos]] + margin:
                chosen[pos] = best
                swapped = True
        if not swapped:
            break
    return chosen


def _rss(design: np.ndarray, z: np.ndarray) -> float:
    if design.shape[1] == 0:
        return float(z @ z)
    coef, *_ = np.linalg.lstsq(design, z, rcond=None)
    rest = z - design @ coef
    return float(rest @ rest)


def _prune(w: np.ndarray, z: np.ndarray, chosen: list[int], threshold: float) -> list[int]:
    """Drop the root that adds least beside the others while it adds less than a newcomer must
    (after swaps, an early root can be redundant with the ones that came later)."""
    chosen = list(chosen)
    while len(chosen) > 1:
        full = _rss(w[:, chosen], z)
        adds = [_rss(w[:, chosen[:j] + chosen[j + 1:]], z) - full for j in range(len(chosen))]
        weakest = int(np.argmin(adds))
        if adds[weakest] >= threshold:
            break
        del chosen[weakest]
    return chosen
