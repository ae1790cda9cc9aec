"""Concept drift audit vs a loop of scipy's ks_2samp vs evidently's DataDriftPreset(method="ks").

One synthetic bank, the same data for all three: concept scores are cosine similarities of unit
embeddings that share a low-rank structure with unit concept vectors, so scores are correlated
across concepts as real concept scores are. Times a full audit (``KSDriftDetector.detect``, which
against a baseline stored sorted, as `t2c baseline build` stores it and every audit reads it;
also from raw baseline scores, sorting them inside) and the root causes every audit adds
(``explain_shift`` against a 5,000-vector baseline sample), scipy per concept (same method: 'auto' is
asymptotic at these sizes) and evidently on a subset of concepts (scaled per concept). Then checks the defaults: clean
windows (no shift) at n_cur 1k and 10k, and a planted shift of a few percent of images strongly
expressing one concept. Prints progress to stderr, then one JSON object as the last stdout line.

    python bench/drift.py [--concepts 1000] [--n-ref 100000] [--n-cur 10000] [--evidently-concepts 50]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
from scipy.stats import ks_2samp

from t2c_monitor.drift import KSDriftDetector, SortedReference, explain_shift


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class CorrelatedBank:
    """Unit concept vectors and a unit-embedding distribution sharing a rank-``rank`` structure
    and a common centre, like CLIP-space concept scores (here mean ~0.27, sd ~0.07, median
    |correlation| between concepts ~0.3, near-synonyms up to ~0.95)."""

    def __init__(self, k: int, d: int = 128, rank: int = 8, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.basis = np.linalg.qr(rng.standard_normal((d, rank)))[0]
        self.centre = rng.standard_normal(d)
        self.centre /= np.linalg.norm(self.centre)
        concepts = (
            0.4 * self.centre[:, None]
            + self.basis @ rng.standard_normal((rank, k)) / np.sqrt(rank)
            + rng.standard_normal((d, k)) / np.sqrt(d)
        )
        self.concepts = (concepts / np.linalg.norm(concepts, axis=0)).T.astype(np.float32)  # (k, d)
        self.d, self.rank = d, rank

    def embeddings(self, n: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((n, self.rank)) * np.linspace(1.0, 0.3, self.rank)
        x = self.centre + 0.15 * z @ self.basis.T + 0.15 * rng.standard_normal((n, self.d)) / np.sqrt(self.d)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def vectors(self, n: int, seed: int, shift_concept: int | None = None, fraction: float = 0.0,
                sds: float = 4.0) -> np.ndarray:
        """``(n, d)`` unit embeddings; optionally a ``fraction`` of rows pushed towards one concept
        until its score rises by ``sds`` baseline standard deviations on average."""
        rng = np.random.default_rng(seed)
        x = self.embeddings(n, rng)
        if shift_concept is not None and fraction > 0:
            rows = rng.random(n) < fraction
            x[rows] = push(x[rows], self.concepts[shift_concept].astype(np.float64), sds, self)
        return x.astype(np.float32)

    def scores(self, n: int, seed: int, shift_concept: int | None = None, fraction: float = 0.0, sds: float = 4.0):
        """``(n, k)`` float32 scores of ``vectors(...)``."""
        x = self.vectors(n, seed, shift_concept, fraction, sds)
        out = np.empty((n, self.concepts.shape[0]), dtype=np.float32)
        for s in range(0, n, 20_000):
            out[s : s + 20_000] = x[s : s + 20_000] @ self.concepts.T
        return out


def push(x: np.ndarray, c: np.ndarray, sds: float, bank: CorrelatedBank) -> np.ndarray:
    """Move unit rows towards unit vector ``c`` (then renormalise) so that their score on ``c``
    rises by ``sds`` baseline standard deviations on average (bisection on the step length)."""
    sd = float((bank.embeddings(20_000, np.random.default_rng(10**6)) @ c).std())

    def moved(a: float) -> np.ndarray:
        y = x + a * c
        return y / np.linalg.norm(y, axis=1, keepdims=True)

    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float((moved(mid) @ c - x @ c).mean()) < sds * sd else (lo, mid)
    return moved(hi)


def time_evidently(ref: np.ndarray, cur: np.ndarray, cols: int) -> float:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    names = [f"c{j}" for j in range(cols)]
    definition = DataDefinition(numerical_columns=names)
    ref_ds = Dataset.from_pandas(pd.DataFrame(ref[:, :cols], columns=names), data_definition=definition)
    cur_ds = Dataset.from_pandas(pd.DataFrame(cur[:, :cols], columns=names), data_definition=definition)
    report = Report([DataDriftPreset(method="ks")])
    start = time.perf_counter()
    report.run(cur_ds, ref_ds)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=1000)
    parser.add_argument("--n-ref", type=int, default=100_000)
    parser.add_argument("--n-cur", type=int, default=10_000)
    parser.add_argument("--evidently-concepts", type=int, default=50)
    parser.add_argument("--clean-audits", type=int, default=20)
    parser.add_argument("--vectors", type=int, default=5000, help="baseline vectors kept for root causes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    bank = CorrelatedBank(args.concepts, seed=args.seed)
    log(f"drawing {args.n_ref} baseline and {args.n_cur} window scores for {args.concepts} concepts")
    ref = bank.scores(args.n_ref, seed=args.seed + 1)
    cur_vectors = bank.vectors(args.n_cur, seed=args.seed + 2, shift_concept=7, fraction=0.05)
    cur = cur_vectors @ bank.concepts.T
    corr = np.corrcoef(ref[:5000, :50].T)
    log(f"median |correlation| between concept scores: {np.median(np.abs(corr[np.triu_indices(50, 1)])):.2f}")

    detector = KSDriftDetector()
    # the production path: `t2c baseline build` stores each concept's baseline scores sorted, once;
    # every audit reads them and runs SortedReference.from_sorted + detect (what run_audit does)
    log("baseline build: sorting each concept's scores once (stored sorted) ...")
    start = time.perf_counter()
    stored = np.sort(np.ascontiguousarray(ref.T), axis=1)  # (k, n) rows, as read back from baseline_concept
    build_sort_seconds = time.perf_counter() - start
    log(f"  {build_sort_seconds:.2f} s")
    log("audit against the stored baseline (SortedReference.from_sorted + KSDriftDetector.detect) ...")
    start = time.perf_counter()
    prepared = SortedReference.from_sorted(stored)
    result = detector.detect(prepared, cur)
    seconds = time.perf_counter() - start
    log(f"  {seconds:.2f} s, {len(result.flagged)} flagged, top: {[c.name for c in result.flagged[:3]]}")
    log(f"root causes (explain_shift) against a sample of {args.vectors} baseline vectors ...")
    baseline_vectors = bank.vectors(args.vectors, seed=args.seed + 1)  # the rows of `ref` it was drawn from
    start = time.perf_counter()
    explanation = explain_shift(baseline_vectors, cur_vectors, bank.concepts, result)
    explain_seconds = time.perf_counter() - start
    log(f"  {explain_seconds:.2f} s, roots {[r.name for r in explanation.roots]} of {len(result.flagged)} flagged, "
        f"unlisted={explanation.unlisted}")
    log("audit from raw baseline scores (sorting them inside, as a one-off audit would) ...")
    start = time.perf_counter()
    cold = detector.detect(ref, cur)
    cold_seconds = time.perf_counter() - start
    assert cold.to_dict() == result.to_dict()
    log(f"  {cold_seconds:.2f} s")

    log(f"scipy.stats.ks_2samp loop over {args.concepts} concepts ...")
    start = time.perf_counter()
    scipy_res = [ks_2samp(ref[:, j], cur[:, j]) for j in range(args.concepts)]
    scipy_seconds = time.perf_counter() - start
    log(f"  {scipy_seconds:.2f} s")
    p_scipy = np.array([r.pvalue for r in scipy_res])
    s_scipy = np.array([r.statistic for r in scipy_res])
    p_ours = np.array([c.p_value for c in result.concepts])
    s_ours = np.array([c.ks_stat for c in result.concepts])

    log(f"evidently DataDriftPreset(method='ks') on {args.evidently_concepts} concepts ...")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev_seconds = time_evidently(ref, cur, args.evidently_concepts)
    log(f"  {ev_seconds:.2f} s")

    # fresh seeds, never used while choosing the defaults
    log(f"{args.clean_audits} clean audits each at n_cur in 1000, 3000, {args.n_cur} ...")
    clean_flags: dict[str, int] = {}
    small_bank_flags = 0
    for n_cur in (1000, 3000, args.n_cur):
        total = 0
        for a in range(args.clean_audits):
            window = bank.scores(n_cur, seed=50_000 + 100 * n_cur + a)
            total += len(detector.detect(prepared, window).flagged)
            small_bank_flags += len(detector.detect(ref[:, :30], window[:, :30]).flagged)
        clean_flags[str(n_cur)] = total
        log(f"  n_cur={n_cur}: {total} flags in total")
    log(f"  30-concept bank, all sizes: {small_bank_flags} flags in total")

    planted = result.concepts[7]
    out = {
        "concepts": args.concepts,
        "n_ref": args.n_ref,
        "n_cur": args.n_cur,
        "seconds": round(seconds, 3),
        "seconds_per_concept": seconds / args.concepts,
        "baseline_build_sort_seconds": round(build_sort_seconds, 3),
        "seconds_unsorted_reference": round(cold_seconds, 3),
        "scipy_seconds": round(scipy_seconds, 3),
        "scipy_seconds_per_concept": scipy_seconds / args.concepts,
        "speedup_vs_scipy": round(scipy_seconds / seconds, 1),
        "explain_seconds": round(explain_seconds, 3),
        "speedup_vs_scipy_with_roots": round(scipy_seconds / (seconds + explain_seconds), 1),
        "roots": [r.name for r in explanation.roots],
        "speedup_vs_scipy_unsorted_reference": round(scipy_seconds / cold_seconds, 1),
        "evidently_concepts": args.evidently_concepts,
        "evidently_seconds_per_concept": ev_seconds / args.evidently_concepts,
        "speedup_vs_evidently_per_concept": round(ev_seconds / args.evidently_concepts / (seconds / args.concepts), 1),
        "max_abs_p_diff": float(np.abs(p_scipy - p_ours).max()),
        "statistics_equal": bool(np.array_equal(s_scipy, s_ours)),
        "planted": {"concept": 7, "fraction": 0.05, "sds": 4.0, "rank": planted.rank,
                    "direction": planted.direction, "ks": round(planted.ks_stat, 4),
                    "effect_size": round(planted.effect_size, 3), "flagged_total": len(result.flagged)},
        "clean_audits": args.clean_audits,
        "clean_false_flags": clean_flags,
        "clean_false_flags_30_concepts_all_sizes": small_bank_flags,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
