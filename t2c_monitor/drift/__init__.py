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

Modules: ``ks`` (the batched KS statistics and p-values), ``reference`` (``SortedReference``,
``Reservoir``), ``detector`` (corrections, detectors, ``DriftResult``, ``drift_direction``),
``validation`` (input checks, ``MIN_SAMPLES``), ``parallel`` (chunks of concepts on threads) and
``roots`` (``explain_shift``: the roots among flagged concepts, their echoes, the test of the
aligned vectors themselves and drift that no concept names).
Everything public is importable from ``t2c_monitor.drift`` itself.
"""

from t2c_monitor.drift.detector import (
    ConceptDrift,
    ConceptDriftDetector,
    Correction,
    DriftResult,
    KSDriftDetector,
    benjamini_hochberg,
    bonferroni,
    drift_direction,
)
from t2c_monitor.drift.ks import KS_METHODS, KSBatch, KSMethod, ks_2samp_batched, kstwo_sf, smirnov_sf
from t2c_monitor.drift.reference import Reservoir, SortedReference
from t2c_monitor.drift.roots import Root, RootSettings, ShiftExplanation, VectorTest, explain_shift, vector_test
from t2c_monitor.drift.validation import MIN_SAMPLES

__all__ = [
    "KS_METHODS",
    "MIN_SAMPLES",
    "Root",
    "RootSettings",
    "ShiftExplanation",
    "VectorTest",
    "ConceptDrift",
    "ConceptDriftDetector",
    "Correction",
    "DriftResult",
    "KSBatch",
    "KSDriftDetector",
    "KSMethod",
    "Reservoir",
    "SortedReference",
    "benjamini_hochberg",
    "bonferroni",
    "drift_direction",
    "explain_shift",
    "ks_2samp_batched",
    "kstwo_sf",
    "smirnov_sf",
    "vector_test",
]
