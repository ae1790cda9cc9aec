"""Root causes, the vector test and unlisted drift (``drift.explain_shift``) on synthetic data with a
known cause structure: latent binary factors, each with its own direction in an embedding space,
and concept vectors that see several factors at once (so concept scores move together)."""

from __future__ import annotations

import numpy as np
import pytest

from t2c_monitor.drift import KSDriftDetector, RootSettings, SortedReference, explain_shift, vector_test

D = 48
FACTORS = ("night", "fog", "red", "grass", "snow", "blue", "star", "sky", "blur", "small", "hidden")


class World:
    """Unit vectors: a common centre, plus for each present factor its direction, plus noise.
    Every factor but "hidden" has its concept, which also sees another factor a little; "dark"
    sees night partly and fog a little (an echo of night), "warm" sees red and night (moved by
    either); "hidden" has no concept at all."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        basis = np.linalg.qr(rng.standard_normal((D, len(FACTORS) + 1)))[0].T
        self.centre, directions = basis[0], basis[1:]
        self.direction = dict(zip(FACTORS, directions, strict=True))
        d = self.direction
        named = [f for f in FACTORS if f != "hidden"]
        concepts = {f: d[f] + 0.2 * d[named[(i + 1) % len(named)]] for i, f in enumerate(named)}
        concepts["dark"] = 0.5 * d["night"] + 0.2 * d["fog"]
        concepts["warm"] = 0.4 * d["red"] + 0.3 * d["night"]
        self.names = list(concepts)
        vectors = np.stack([0.5 * self.centre + v for v in concepts.values()])
        self.concepts = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def vectors(self, n: int, seed: int, **prevalence: float) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x = np.tile(self.centre, (n, 1)) + 0.08 * rng.standard_normal((n, D))
        for factor in FACTORS:
            present = rng.random(n) < prevalence.get(factor, 0.2)
            x += 0.35 * present[:, None] * self.direction[factor]
        return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def baseline(world):
    vectors = world.vectors(3000, seed=1)
    return vectors, SortedReference.from_scores(vectors @ world.concepts.T)


def audit(world, baseline, window, names=None):
    vectors, reference = baseline
    result = KSDriftDetector().detect(reference, window @ world.concepts.T, world.names)
    return result, explain_shift(vectors, window, world.concepts, result)


def test_one_cause_is_the_root_and_its_echoes_move_with_it(world, baseline):
    result, explanation = audit(world, baseline, world.vectors(600, seed=2, night=0.5))
    flagged = {c.name for c in result.flagged}
    assert {"night", "dark", "warm"} <= flagged, "the echoes are flagged by their own KS tests"
    assert [(r.name, r.direction) for r in explanation.roots] == [("night", 1)]
    assert explanation.echoes["dark"] == "night" and explanation.echoes["warm"] == "night"
    assert set(explanation.roots[0].echoes) == flagged - {"night"}
    assert 0.5 < explanation.roots[0].share <= 1.0 and not explanation.unlisted  # a share of the whole shift


def test_a_fall_is_a_root_with_direction_less(world, baseline):
    _, explanation = audit(world, baseline, world.vectors(600, seed=3, fog=0.0))
    assert [(r.name, r.direction) for r in explanation.roots] == [("fog", -1)]


@pytest.mark.parametrize("pair", [("night", "fog"), ("night", "red")])
def test_two_causes_whose_concepts_overlap_are_both_roots(world, baseline, pair):
    """"night" sees fog, "dark" sees night and fog, "warm" red and night: one cause plus an echo,
    or the concept that sees both, would be wrong."""
    result, explanation = audit(world, baseline, world.vectors(600, seed=4, **{f: 0.5 for f in pair}))
    assert sorted(r.name for r in explanation.roots) == sorted(pair), [c.name for c in result.flagged]
    assert explanation.echoes.get("dark") in pair


def test_a_shift_no_concept_names_is_reported_with_its_direction(world, baseline):
    window = world.vectors(600, seed=5, hidden=0.6)
    result, explanation = audit(world, baseline, window)
    assert explanation.vector_test.p_value < 1e-6
    assert explanation.unlisted and explanation.residual_share >= 0.6
    cosine = explanation.residual @ world.direction["hidden"] / np.linalg.norm(explanation.residual)
    assert cosine > 0.9, "the unexplained part points at the hidden factor"
    assert explanation.roots == [] or all(r.share < 0.3 for r in explanation.roots), result.flagged


def test_clean_windows_have_no_roots_and_no_unlisted_drift(world, baseline):
    for seed in range(10, 20):
        result, explanation = audit(world, baseline, world.vectors(600, seed=seed))
        assert explanation.roots == [] and not explanation.unlisted, (seed, result.flagged)


def test_vector_test_holds_its_level_on_one_distribution_and_finds_a_small_shift():
    """200 windows drawn from the baseline's distribution: the share with p <= 0.05 is within
    sampling error of 0.05 (binomial sd 0.015: at most 0.095); a shift along one axis
    of 0.6 sd is found every time."""
    rng = np.random.default_rng(7)
    scales = np.linspace(1.0, 0.2, 16)
    ref = rng.standard_normal((800, 16)) * scales
    p_null = np.array([vector_test(ref, rng.standard_normal((150, 16)) * scales).p_value for _ in range(200)])
    assert 0.01 <= np.mean(p_null <= 0.05) <= 0.095, np.mean(p_null <= 0.05)
    assert np.mean(p_null <= 0.001) <= 0.003 or np.sum(p_null <= 0.001) <= 2
    shift = np.zeros(16)
    shift[5] = 0.6 * scales[5]
    p_alt = [vector_test(ref, rng.standard_normal((150, 16)) * scales + shift).p_value for _ in range(50)]
    assert max(p_alt) < 0.05


def test_bad_inputs_are_refused_with_a_clear_message(world, baseline):
    vectors, reference = baseline
    window = world.vectors(100, seed=9)
    result = KSDriftDetector().detect(reference, window @ world.concepts.T, world.names)
    with pytest.raises(ValueError, match="one width"):
        explain_shift(vectors, window[:, :10], world.concepts, result)
    with pytest.raises(ValueError, match="concept_vectors"):
        explain_shift(vectors, window, world.concepts[:3], result)
    with pytest.raises(ValueError, match="at least 40 baseline"):
        explain_shift(vectors[:10], window, world.concepts, result)
    bad = window.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        explain_shift(vectors, bad, world.concepts, result)
    with pytest.raises(ValueError, match="min_share"):
        RootSettings(min_share=1.5)
