"""Contracts of the concept drift audit: scipy-exact KS, corrections, gates, ranking, baselines."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from scipy import special, stats

from t2c_monitor.drift import (
    MIN_SAMPLES,
    KSDriftDetector,
    Reservoir,
    SortedReference,
    benjamini_hochberg,
    bonferroni,
    drift_direction,
    ks_2samp_batched,
    kstwo_sf,
    smirnov_sf,
)


class Bank:
    """Correlated concept scores: unit embeddings and unit concept vectors share a low-rank
    structure and a common centre, as CLIP-space concept scores do."""

    def __init__(self, k: int, d: int = 64, rank: int = 6, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.basis = np.linalg.qr(rng.standard_normal((d, rank)))[0]
        self.centre = rng.standard_normal(d) / np.sqrt(d)
        self.centre /= np.linalg.norm(self.centre)
        c = 0.4 * self.centre[:, None] + self.basis @ rng.standard_normal((rank, k)) / np.sqrt(rank)
        c += rng.standard_normal((d, k)) / np.sqrt(d)
        self.concepts = (c / np.linalg.norm(c, axis=0)).T
        self.rank = rank

    def embeddings(self, n: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((n, self.rank)) * np.linspace(1.0, 0.3, self.rank)
        x = self.centre + 0.15 * z @ self.basis.T + 0.15 * rng.standard_normal((n, self.basis.shape[0])) / 8
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def scores(self, n: int, seed: int, push: int | None = None, fraction: float = 0.0, step: float = 0.0):
        rng = np.random.default_rng(seed)
        x = self.embeddings(n, rng)
        if push is not None:
            rows = rng.random(n) < fraction
            x[rows] += step * self.concepts[push]
            x[rows] /= np.linalg.norm(x[rows], axis=1, keepdims=True)
        return (x @ self.concepts.T).astype(np.float32)


def scipy_columns(ref: np.ndarray, cur: np.ndarray, method: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = [stats.ks_2samp(ref[:, j], cur[:, j], method=method) for j in range(ref.shape[1])]
    return (
        np.array([r.statistic for r in res]),
        np.array([r.pvalue for r in res]),
        np.array([r.statistic_sign for r in res]),
    )


def _data(kind: str, n1: int, n2: int, k: int, seed: int):
    rng = np.random.default_rng(seed)
    shift = rng.uniform(-0.4, 0.4, k)
    if kind == "continuous":
        reference = rng.standard_normal((n1, k)).astype(np.float32)
        return reference, (rng.standard_normal((n2, k)) + shift).astype(np.float32)
    if kind == "ties":  # rounded scores: many ties within and across sides
        return np.round(rng.standard_normal((n1, k)), 1), np.round(rng.standard_normal((n2, k)) + shift, 1)
    # discrete: a handful of values
    return rng.integers(0, 6, (n1, k)).astype(np.float64), rng.integers(0, 6, (n2, k)) + (rng.random((n2, k)) < 0.1)


CASES = [
    ("continuous", 30, 25), ("continuous", 400, 400), ("continuous", 2000, 300), ("continuous", 12000, 800),
    ("ties", 25, 40), ("ties", 1500, 700), ("ties", 11000, 500),
    ("discrete", 60, 60), ("discrete", 3000, 900), ("discrete", 10500, 400),
]


# scipy's exact path on > 10k samples is slow in scipy itself; smaller cases cover it
@pytest.mark.parametrize(
    "kind,n1,n2,method",
    [(*case, m) for case in CASES for m in ("auto", "asymp", "exact") if not (m == "exact" and case[1] > 10_000)],
)
def test_ks_matches_scipy(kind: str, n1: int, n2: int, method: str) -> None:
    ref, cur = _data(kind, n1, n2, k=6, seed=n1 + n2)
    stat, p, sign = scipy_columns(ref, cur, method)
    out = ks_2samp_batched(ref, cur, method=method)
    assert np.array_equal(out.statistic, stat)  # bit for bit, ties included
    assert np.abs(out.pvalue - p).max() <= 1e-9
    assert np.array_equal(out.sign, sign)


def test_ks_accepts_torch_and_prepared_reference() -> None:
    ref, cur = _data("continuous", 3000, 500, k=5, seed=1)
    plain = ks_2samp_batched(ref, cur)
    from_torch = ks_2samp_batched(torch.from_numpy(ref), torch.from_numpy(cur))
    prepared = ks_2samp_batched(SortedReference.from_scores(ref), cur)
    one_thread = ks_2samp_batched(ref, cur, workers=1)
    for other in (from_torch, prepared, one_thread):
        assert np.array_equal(other.statistic, plain.statistic) and np.array_equal(other.pvalue, plain.pvalue)


@pytest.mark.parametrize("n", [20, 140, 141, 1000, 9091])
def test_kstwo_sf_matches_scipy_on_every_branch(n: int) -> None:
    d = np.concatenate([np.linspace(0, 5 / np.sqrt(n), 120), np.linspace(0, 1, 25), [0.5 / n, 1 / n, 1 - 1 / n]])
    assert np.abs(kstwo_sf(d, n) - stats.kstwo.sf(d, n)).max() <= 1e-12


def test_smirnov_sf_matches_scipy() -> None:
    for n in (150, 3000):
        x = np.linspace(np.sqrt(2.2 / n), 0.9, 40)
        want = special.smirnov(n, x)
        got = smirnov_sf(n, x)
        assert np.all(np.abs(got - want) <= 1e-10 * np.maximum(want, 1e-300) + 1e-300)


def test_benjamini_hochberg_and_bonferroni() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.2])
    # hand: sorted 0.005, 0.01, 0.03, 0.04, 0.2 -> 5p/i = 0.025, 0.025, 0.05, 0.05, 0.2 (already monotone)
    assert np.allclose(benjamini_hochberg(p), [0.025, 0.05, 0.05, 0.025, 0.2])
    assert np.allclose(bonferroni(p), [0.05, 0.2, 0.15, 0.025, 1.0])
    rng = np.random.default_rng(0)
    many = np.concatenate([rng.random(300), rng.random(30) * 1e-4])
    assert np.allclose(benjamini_hochberg(many), stats.false_discovery_control(many, method="bh"))


def shifted(k: int, shifts: list[float], n_ref: int = 20_000, n_cur: int = 5_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((n_ref, k)).astype(np.float32) * 0.05 + 0.25
    cur = rng.standard_normal((n_cur, k)).astype(np.float32) * 0.05 + 0.25
    cur[:, : len(shifts)] += np.array(shifts, dtype=np.float32) * 0.05  # shifts in baseline SDs
    return ref, cur


def test_min_effect_gate_stops_significant_but_negligible_shifts() -> None:
    ref, cur = shifted(10, [0.08] * 10, n_ref=40_000, n_cur=20_000)  # every concept nudged by 0.08 SD
    default = KSDriftDetector().detect(ref, cur)
    assert all(c.q_value <= KSDriftDetector().alpha for c in default.concepts)  # plain KS would flag them all
    assert default.flagged == []
    loose = KSDriftDetector(min_effect_size=0.05, min_ks=0.0).detect(ref, cur)
    assert len(loose.flagged) == 10
    strict_ks = KSDriftDetector(min_effect_size=0.0, min_ks=0.5).detect(ref, cur)
    assert strict_ks.flagged == []


def test_direction_ranking_and_result_shape() -> None:
    ref, cur = shifted(12, [0.3, -0.6, 0.45, -0.15])
    names = [f"c{j}" for j in range(12)]
    result = KSDriftDetector().detect(ref, cur, names)
    assert [c.name for c in result.flagged] == ["c1", "c2", "c0", "c3"]  # by |effect size|
    assert [c.rank for c in result.flagged] == [1, 2, 3, 4]
    assert [c.direction for c in result.flagged] == [-1, 1, 1, -1]
    assert all(c.rank is None and not c.flagged for c in result.concepts[4:])
    assert result.concepts[1].effect_size == pytest.approx(-0.6, abs=0.05)
    assert result.n_ref == 20_000 and result.n_cur == 5_000
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["flagged"] == ["c1", "c2", "c0", "c3"]
    assert payload["params"]["correction"] == "bh" and len(payload["concepts"]) == 12
    bonf = KSDriftDetector(correction="bonferroni").detect(ref, cur, names)
    assert all(c.q_value >= d.q_value for c, d in zip(bonf.concepts, result.concepts, strict=False))


def test_planted_shift_in_correlated_bank_is_flagged_first() -> None:
    bank = Bank(k=60, seed=3)
    ref = bank.scores(20_000, seed=1)
    cur = bank.scores(5_000, seed=2, push=17, fraction=0.06, step=0.5)  # 6% of images show concept 17
    corr = np.corrcoef(ref[:3000].T)[np.triu_indices(60, 1)]
    assert np.median(np.abs(corr)) > 0.15  # the bank's scores really are correlated
    result = KSDriftDetector().detect(SortedReference.from_scores(ref), cur)
    top = result.flagged[0]
    assert (top.index, top.rank, top.direction) == (17, 1, 1)
    assert top.effect_size > 0.15 and top.q_value < 1e-6


def test_clean_windows_rarely_flag() -> None:
    bank = Bank(k=100, seed=5)
    ref = SortedReference.from_scores(bank.scores(20_000, seed=1))
    detector = KSDriftDetector()
    flags = sum(len(detector.detect(ref, bank.scores(n, seed=100 + a)).flagged)
                for a, n in enumerate([1000, 3000] * 10))
    assert flags <= 1


def test_reservoir_is_uniform_deterministic_and_batch_independent() -> None:
    stream = np.arange(2000, dtype=np.float64)[:, None]
    counts = np.zeros(2000)
    for seed in range(300):
        res = Reservoir(100, seed=seed)
        for start in range(0, 2000, 170):
            res.add(stream[start : start + 170])
        kept = res.sample()[:, 0].astype(int)
        assert len(set(kept)) == 100
        counts[kept] += 1
    assert res.n_seen == 2000
    assert stats.chisquare(counts).pvalue > 1e-3  # every row equally likely to survive (expected 15 each)
    assert counts[:100].mean() == pytest.approx(15, rel=0.2)  # the first rows are not favoured

    def run(seed: int, cuts: list[int]) -> np.ndarray:
        res = Reservoir(50, seed=seed)
        edges = [0, *cuts, 2000]
        for a, b in zip(edges[:-1], edges[1:], strict=False):
            res.add(stream[a:b])
        return res.sample()

    assert np.array_equal(run(7, [10, 500, 501, 1500]), run(7, [1000]))
    assert not np.array_equal(run(7, [1000]), run(8, [1000]))
    small = Reservoir(10, seed=0)
    small.add(stream[:4])
    assert np.array_equal(small.sample(), stream[:4])


def test_drift_direction() -> None:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((50, 8))
    base_mean = np.full(8, 0.1)
    vec, norm = drift_direction(base_mean, emb * 3.0)  # scale does not matter: rows are unit-normalised
    want = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).mean(axis=0) - base_mean
    assert np.allclose(vec, want) and norm == pytest.approx(np.linalg.norm(want))
    with pytest.raises(ValueError, match="width"):
        drift_direction(np.zeros(7), emb)


def test_bad_inputs_say_what_to_do() -> None:
    ref, cur = shifted(3, [])
    bad = cur.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="current has 1 NaN/inf"):
        ks_2samp_batched(ref, bad)
    inf_ref = ref.copy()
    inf_ref[0, 0] = np.inf
    with pytest.raises(ValueError, match="reference .*NaN/inf"):
        KSDriftDetector().detect(inf_ref, cur)
    with pytest.raises(ValueError, match=f"at least {MIN_SAMPLES}"):
        ks_2samp_batched(ref, cur[: MIN_SAMPLES - 1])
    with pytest.raises(ValueError, match="current has 0 samples"):
        ks_2samp_batched(ref, cur[:0])
    with pytest.raises(ValueError, match="same concept bank"):
        ks_2samp_batched(ref, cur[:, :2])
    with pytest.raises(ValueError, match="one name per column"):
        KSDriftDetector().detect(ref, cur, ["a", "b"])
    with pytest.raises(ValueError, match="2-d"):
        ks_2samp_batched(ref[None], cur)
    with pytest.raises(ValueError, match="method"):
        KSDriftDetector(method="fast")
    with pytest.raises(ValueError, match="correction"):
        KSDriftDetector(correction="holm")
    with pytest.raises(ValueError, match="alpha"):
        KSDriftDetector(alpha=0)
    res = Reservoir(5)
    res.add(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="same concept bank"):
        res.add(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="empty"):
        Reservoir(5).sample()
