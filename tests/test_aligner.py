"""Contracts of the aligner: fitting recovers planted maps, save/load keeps spaces apart, metrics are right."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from t2c_monitor.aligner import (
    Aligner,
    FeatureFileWriter,
    element_variance,
    evaluate,
    evaluate_chunks,
    fit_exact,
    fit_sgd,
    iter_chunks,
    open_feature_file,
    save_feature_file,
)
from t2c_monitor.errors import ModelLoadError, SpaceMismatchError, T2CError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SOURCE = {"kind": "timm", "name": "resnet10t", "weights": None, "weights_sha256": "a" * 64, "dim": 24}
CLIP = {"kind": "open_clip", "name": "tiny.json", "weights": "ckpt.pt", "weights_sha256": "b" * 64, "dim": 6}


def planted(n: int, d_in: int = 24, d_out: int = 6, noise: float = 0.0, seed: int = 0, scale: float = 1.0):
    """Correlated, offset source features and targets from a known affine map (plus optional noise)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d_in, d_in, generator=g) * torch.linspace(1.0, 0.05, d_in)[:, None]
    X = (torch.randn(n, d_in, generator=g) @ mix) * scale + 0.3 * torch.rand(d_in, generator=g) + 1.0
    W = torch.randn(d_in, d_out, generator=g)
    b = torch.randn(d_out, generator=g) + 2.0
    Y = X @ W + b + noise * torch.randn(n, d_out, generator=g)
    return X, Y, W, b


def test_exact_recovers_a_planted_affine_map():
    X, Y, W, b = planted(3000)
    aligner = fit_exact(iter_chunks(X[:2500], Y[:2500], 256), device="cpu")
    metrics = evaluate(aligner, X[2500:], Y[2500:])
    assert metrics.r2 > 0.999
    assert metrics.cosine > 0.999
    torch.testing.assert_close(aligner.W, W, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(aligner.b, b, atol=2e-2, rtol=1e-3)
    assert (aligner.method, aligner.n_train, aligner.d_in, aligner.d_out) == ("exact", 2500, 24, 6)
    assert aligner.fit_info["solver"] == "cholesky"


def test_chunked_fit_equals_one_shot_fit():
    X, Y, _, _ = planted(2000, noise=0.5)
    chunked = fit_exact(iter_chunks(X, Y, 97), device="cpu")
    one_shot = fit_exact([(X, Y)], device="cpu")
    torch.testing.assert_close(chunked.W, one_shot.W, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.b, one_shot.b, atol=1e-4, rtol=1e-5)
    # and both equal the textbook least-squares solution computed in float64
    design = torch.cat([X.double(), torch.ones(len(X), 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, Y.double()).solution
    torch.testing.assert_close(one_shot.W, solution[:-1].float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(one_shot.b, solution[-1].float(), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("precision, ridge", [("float64", 0.0), ("mixed", 0.0), ("float64", 0.3)])
def test_in_sample_r2_from_the_sums_equals_scoring_the_training_pairs(precision, ridge):
    X, Y, _, _ = planted(1200, noise=0.8)
    fit = fit_exact(iter_chunks(X, Y, 250), ridge=ridge, device="cpu", precision=precision)
    assert 0.3 < fit.fit_info["r2_train"] < 0.999  # noisy enough that the figure means something
    assert fit.fit_info["r2_train"] == pytest.approx(evaluate(fit, X, Y).r2, abs=1e-5)


def test_mixed_precision_products_agree_with_float64():
    X, Y, _, _ = planted(3000, noise=0.5)
    exact = fit_exact(iter_chunks(X, Y, 500), device="cpu")
    mixed = fit_exact(iter_chunks(X, Y, 500), device="cpu", precision="mixed")
    assert mixed.fit_info["precision"] == "mixed"
    torch.testing.assert_close(mixed.W, exact.W, atol=1e-3, rtol=1e-3)
    assert abs(evaluate(mixed, X, Y).r2 - evaluate(exact, X, Y).r2) < 1e-6
    with pytest.raises(ValueError, match="precision"):
        fit_exact([(X, Y)], precision="float16")


@pytest.mark.parametrize("precision", ["float64", "mixed"])
def test_torch_sums_used_on_gpus_equal_the_cpu_blas_sums(precision):
    # the torch path runs on CUDA; here it runs on the CPU so both paths are checked on every machine
    from t2c_monitor.aligner.exact import _Moments

    X, Y, _, _ = planted(900, noise=0.5)
    X = X + 40.0  # a large common offset: the shift keeps it from cancelling catastrophically
    sums = {}
    for use_blas in (True, False):
        moments = _Moments(X.shape[1], Y.shape[1], torch.device("cpu"), precision, blas=use_blas)
        for x, y in iter_chunks(X, Y, 200):
            moments.add(x, y)
        sums[use_blas] = moments.stats().blocks()
    tol = 1e-10 if precision == "float64" else 1e-5
    for blas_part, torch_part in zip(sums[True], sums[False], strict=True):
        torch.testing.assert_close(blas_part, torch_part, atol=tol, rtol=tol)
    design = X.double() - X.double().mean(dim=0)
    torch.testing.assert_close(sums[True][0], design.T @ design / len(X), atol=tol, rtol=tol)


def test_streamed_evaluation_checks_labels_chunk_by_chunk():
    X, Y, _, _ = planted(300, noise=0.5)
    fit = fit_exact([(X, Y)], device="cpu")
    class_vectors = torch.randn(3, Y.shape[1], generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(2))
    whole = evaluate(fit, X, Y, labels=labels, class_vectors=class_vectors)
    chunks = [(X[i : i + 70], Y[i : i + 70], labels[i : i + 70]) for i in range(0, 300, 70)]
    streamed = evaluate_chunks(fit, chunks, class_vectors=class_vectors)
    assert streamed.to_dict() == pytest.approx(whole.to_dict())
    with pytest.raises(ValueError, match=r"one entry per pair of the chunk \(70\), got shape \(70, 1\)"):
        evaluate_chunks(fit, [(X[:70], Y[:70], labels[:70, None])], class_vectors=class_vectors)
    with pytest.raises(ValueError, match="70 of 140 pairs have labels"):
        evaluate_chunks(fit, [(X[:70], Y[:70], labels[:70]), (X[70:140], Y[70:140], None)], class_vectors=class_vectors)
    with pytest.raises(ValueError, match="class_vectors without labels"):
        evaluate_chunks(fit, [(X, Y, None)], class_vectors=class_vectors)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_feature_files_written_chunk_by_chunk_read_back_like_one_write(tmp_path, suffix):
    X, Y, _, _ = planted(230, noise=0.5)
    labels = torch.arange(230) % 4
    class_vectors = torch.randn(4, Y.shape[1])
    identities = {"source": {**SOURCE, "dim": X.shape[1]}, "clip": {**CLIP, "dim": Y.shape[1]}}
    streamed = tmp_path / f"streamed{suffix}"
    with FeatureFileWriter(streamed) as writer:
        for start in range(0, 230, 64):
            writer.append(X[start : start + 64], Y[start : start + 64].double(), labels[start : start + 64])
        assert not streamed.exists()  # the file appears whole, on finish
        writer.finish(class_vectors=class_vectors, **identities)
    whole = tmp_path / f"whole{suffix}"
    save_feature_file(whole, X, Y, labels=labels, class_vectors=class_vectors, **identities)
    for path in (streamed, whole):
        paired = open_feature_file(path)
        assert (paired.n, paired.d_in, paired.d_out) == (230, X.shape[1], Y.shape[1])
        assert (paired.source.to_dict(), paired.clip.to_dict()) == (identities["source"], identities["clip"])
        assert torch.equal(paired.rows("X", 0, 230), X) and torch.equal(paired.rows("Y", 100, 230), Y[100:])
        assert torch.equal(paired.get("labels"), labels) and torch.equal(paired.get("class_vectors"), class_vectors)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([streamed.name, whole.name])  # no scratch left


def test_streamed_safetensors_align_every_tensor_like_the_library_writer(tmp_path):
    path = tmp_path / "odd.safetensors"
    with FeatureFileWriter(path) as writer:  # 5 x 3 float32 rows: 60 bytes, not a multiple of 8
        writer.append(torch.randn(5, 3), torch.randn(5, 1), torch.arange(5))
        writer.finish(class_vectors=torch.randn(2, 1))
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    assert size % 8 == 0
    for key, entry in header.items():
        if key != "__metadata__":
            assert entry["data_offsets"][0] % (8 if entry["dtype"] == "I64" else 4) == 0, key
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(path))["labels"], torch.arange(5))


def test_an_unfinished_feature_file_leaves_nothing_and_bad_chunks_are_refused(tmp_path):
    X, Y, _, _ = planted(40)
    target = tmp_path / "pairs.safetensors"
    with pytest.raises(RuntimeError, match="embedding failed"), FeatureFileWriter(target) as writer:
        writer.append(X[:20], Y[:20])
        raise RuntimeError("embedding failed")
    assert list(tmp_path.iterdir()) == []
    with FeatureFileWriter(target) as writer:
        writer.append(X[:20], Y[:20], torch.zeros(20, dtype=torch.long))
        with pytest.raises(ValueError, match="every chunk or with none"):
            writer.append(X[20:], Y[20:])
        with pytest.raises(ValueError, match="widths changed"):
            writer.append(X[20:, :3], Y[20:], torch.zeros(20, dtype=torch.long))
    with pytest.raises(ValueError, match="no rows"), FeatureFileWriter(target) as writer:
        writer.finish()
    with pytest.raises(ValueError, match=r"\.safetensors or \.npz"):
        FeatureFileWriter(tmp_path / "pairs.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_chunks_in_other_dtypes_fit_like_float32(dtype):
    # half-precision features (as an encoder under autocast returns them) have no numpy view: the
    # CPU path converts them; float64 chunks are read as they are
    X, Y, _, _ = planted(1500, noise=0.5)
    X, Y = X.to(dtype), Y.to(dtype)
    fit = fit_exact(iter_chunks(X, Y, 400), device="cpu")
    reference = fit_exact(iter_chunks(X.float(), Y.float(), 400), device="cpu")
    torch.testing.assert_close(fit.W, reference.W, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fit.b, reference.b, atol=1e-6, rtol=1e-6)


def test_ridge_shrinks_weights_but_not_the_bias():
    X, Y, _, _ = planted(1000, noise=0.5)
    norms = [float(fit_exact([(X, Y)], ridge=r, device="cpu").W.norm()) for r in (0.0, 0.1, 10.0)]
    assert norms[0] > norms[1] > norms[2]
    huge = fit_exact([(X, Y)], ridge=1e9, device="cpu")
    assert float(huge.W.abs().max()) < 1e-6
    torch.testing.assert_close(huge.b, Y.mean(dim=0), atol=1e-3, rtol=1e-4)  # bias unpenalised: the mean
    with pytest.raises(ValueError, match="ridge"):
        fit_exact([(X, Y)], ridge=-1.0)


def test_auto_ridge_rescues_a_fit_with_more_features_than_pairs():
    """Few pairs, many features (a user's few hundred images through a 768-d encoder): unpenalised least
    squares interpolates the training pairs and generalises badly; "auto" finds a penalty that does not."""
    g = torch.Generator().manual_seed(3)
    d_in, d_out = 200, 16
    latent = torch.randn(400, 12, generator=g)  # features that live near a 12-d subspace, plus noise
    X = latent @ torch.randn(12, d_in, generator=g) + 0.5 * torch.randn(400, d_in, generator=g)
    Y = latent @ torch.randn(12, d_out, generator=g) + torch.randn(400, d_out, generator=g)
    train, test = slice(0, 150), slice(150, None)  # 150 pairs of 200 features
    with pytest.warns(RuntimeWarning, match="singular"):
        plain = fit_exact([(X[train], Y[train])], device="cpu")
    auto = fit_exact(iter_chunks(X[train], Y[train], 64), ridge="auto", device="cpu")
    assert plain.fit_info["r2_train"] > 0.999  # interpolated
    r2_plain, r2_auto = evaluate(plain, X[test], Y[test]).r2, evaluate(auto, X[test], Y[test]).r2
    assert r2_auto > r2_plain + 0.1, (r2_plain, r2_auto)
    search = auto.fit_info["ridge_search"]
    assert auto.fit_info["ridge"] > 0 and auto.fit_info["ridge_chosen"] == "auto"
    best = max(search, key=lambda s: s["validation_r2"])
    assert auto.fit_info["ridge"] == best["ridge"] and auto.n_train == 150  # refitted on every row


def test_mixed_precision_sums_of_fewer_pairs_than_features_are_solved_as_singular():
    """Float32 rounding makes the covariance of 150 pairs of 200 features look invertible; solving it as such
    amplified the rounding into the weights (held-out R² of -5,700 in bench/aligner.py at 1,000 x 2,048)."""
    g = torch.Generator().manual_seed(5)
    latent = torch.randn(400, 12, generator=g)
    X = latent @ torch.randn(12, 200, generator=g) + 0.5 * torch.randn(400, 200, generator=g) + 3.0
    Y = latent @ torch.randn(12, 16, generator=g) + torch.randn(400, 16, generator=g)
    fits = {}
    for precision in ("float64", "mixed"):
        with pytest.warns(RuntimeWarning, match="singular"):
            fits[precision] = fit_exact([(X[:150], Y[:150])], device="cpu", precision=precision)
    assert "pseudo-inverse" in fits["mixed"].fit_info["solver"]
    r2 = {k: evaluate(a, X[150:], Y[150:]).r2 for k, a in fits.items()}
    assert r2["mixed"] == pytest.approx(r2["float64"], abs=0.02), r2


def test_auto_ridge_scores_each_penalty_as_predicting_the_rows_set_aside_would():
    """The validation R² of each penalty, computed from sums, equals fitting on four fifths of the rows
    and predicting the fifth; with plenty of pairs the penalty chosen barely changes the fit."""
    from t2c_monitor.aligner.exact import RIDGE_GRID

    X, Y, _, _ = planted(1000, noise=0.5)
    auto = fit_exact(iter_chunks(X, Y, 128), ridge="auto", device="cpu")
    aside = torch.arange(len(X)) % 5 == 4
    for tried in auto.fit_info["ridge_search"]:
        part = fit_exact([(X[~aside], Y[~aside])], ridge=tried["ridge"], device="cpu")
        assert tried["validation_r2"] == pytest.approx(evaluate(part, X[aside], Y[aside]).r2, abs=1e-5)
    assert len(auto.fit_info["ridge_search"]) == len(RIDGE_GRID)
    assert evaluate(auto, X, Y).r2 == pytest.approx(evaluate(fit_exact([(X, Y)], device="cpu"), X, Y).r2, abs=2e-3)
    with pytest.warns(RuntimeWarning, match="singular"):  # 10 rows of 24 features, too few to score a penalty
        few = fit_exact([(X[:10], Y[:10])], ridge="auto", device="cpu")
    assert few.fit_info["ridge"] == 0.0 and "fewer than" in few.fit_info["ridge_search"]
    with pytest.raises(ValueError, match="auto"):
        fit_exact([(X, Y)], ridge="sometimes")


def test_singular_features_fall_back_to_minimum_norm_solution():
    X, Y, _, _ = planted(800)
    X_dup = torch.cat([X, X[:, :1]], dim=1)  # a duplicated column: X^T X is singular
    with pytest.warns(RuntimeWarning, match="ridge"):
        aligner = fit_exact([(X_dup, Y)], device="cpu")
    assert "pseudo-inverse" in aligner.fit_info["solver"]
    assert evaluate(aligner, X_dup, Y).r2 > 0.999
    torch.testing.assert_close(aligner.W[0], aligner.W[-1], atol=1e-4, rtol=1e-3)  # minimum norm splits evenly


def test_sgd_recipe_undoes_the_scaling_correctly_where_the_reference_formula_fails():
    # Small-variance features far from 1 (s_x ~ 11) and a large bias: the reference code's
    # b = b' * s_x / s_y is then far off, while the correct b = b' / s_y predicts the targets.
    # (Features with a large common offset make the recipe itself diverge: keep the offset moderate.)
    g = torch.Generator().manual_seed(0)
    X = (torch.randn(3000, 16, generator=g) @ torch.randn(16, 16, generator=g)) * 0.05 + 0.3
    Y = X @ (3 * torch.randn(16, 4, generator=g)) + torch.randn(4, generator=g) + 2.0
    for scale_targets in (True, False):
        aligner = fit_sgd(X, Y, device="cpu", scale_targets=scale_targets)
        s_x, s_y = aligner.fit_info["scale_x"], aligner.fit_info["scale_y"]
        assert s_x > 5 and (s_y != 1.0) == scale_targets
        assert abs(element_variance(X * s_x) - 4.5) < 1e-3  # the recipe's variance target
        assert evaluate(aligner, X, Y).r2 > 0.99
        reference = copy.deepcopy(aligner)
        reference.b = aligner.b * s_x  # (b' / s_y) * s_x = b' * s_x / s_y: the reference code's bias
        assert evaluate(reference, X, Y).r2 < 0.9
    exact = fit_exact([(X, Y)], device="cpu")
    assert evaluate(exact, X, Y).r2 >= evaluate(aligner, X, Y).r2


def test_sgd_recipe_reports_divergence_instead_of_returning_nan():
    X, Y, _, _ = planted(1000, d_in=16, d_out=4, scale=0.05)  # tiny spread, large offset: lr 0.01 diverges
    with pytest.raises(T2CError, match="diverged"):
        fit_sgd(X, Y, device="cpu")
    assert evaluate(fit_exact([(X, Y)], device="cpu"), X, Y).r2 > 0.999


def test_sgd_recipe_is_seeded_and_deterministic():
    X, Y, _, _ = planted(600, d_in=8, d_out=3)
    first = fit_sgd(X, Y, epochs=2, seed=3, device="cpu")
    second = fit_sgd(X, Y, epochs=2, seed=3, device="cpu")
    other = fit_sgd(X, Y, epochs=2, seed=4, device="cpu")
    assert torch.equal(first.W, second.W) and torch.equal(first.b, second.b)
    assert not torch.equal(first.W, other.W)
    assert len(first.fit_info["epoch_losses_scaled"]) == 2


def test_save_load_round_trip_gives_identical_transform(tmp_path):
    X, Y, _, _ = planted(500, noise=0.1)
    aligner = fit_exact([(X, Y)], device="cpu")
    aligner.source, aligner.clip = SOURCE, CLIP
    aligner.metrics = evaluate(aligner, X, Y).to_dict()
    aligner.save(tmp_path / "al")
    loaded = Aligner.load(tmp_path / "al", expect_source=dict(SOURCE), expect_clip=dict(CLIP))
    assert torch.equal(loaded.transform(X), aligner.transform(X))
    assert (loaded.source.to_dict(), loaded.clip.to_dict()) == (SOURCE, CLIP)
    assert (loaded.method, loaded.n_train) == ("exact", 500)
    assert loaded.feature_variance == aligner.feature_variance
    assert loaded.metrics == aligner.metrics
    meta = json.loads((tmp_path / "al" / "aligner.json").read_text())
    assert meta["d_in"] == 24 and meta["d_out"] == 6
    assert set(meta["versions"]) == {"python", "numpy", "safetensors", "torch", "timm", "open_clip", "t2c_monitor"}
    assert meta["versions"]["python"].count(".") == 2 and meta["versions"]["numpy"] == np.__version__
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0]


def test_load_refuses_other_encoder_or_clip_and_says_how_to_fix(tmp_path):
    X, Y, _, _ = planted(200)
    aligner = fit_exact([(X, Y)], device="cpu")
    aligner.source, aligner.clip = SOURCE, CLIP
    aligner.save(tmp_path / "al")
    retrained = {**SOURCE, "weights_sha256": "c" * 64}
    with pytest.raises(SpaceMismatchError) as info:
        Aligner.load(tmp_path / "al", expect_source=retrained)
    message = str(info.value)
    assert "a" * 12 in message and "c" * 12 in message and "t2c aligner fit" in message
    with pytest.raises(SpaceMismatchError, match="CLIP model"):
        Aligner.load(tmp_path / "al", expect_clip={**CLIP, "dim": 8})
    with pytest.raises(SpaceMismatchError):
        Aligner.load(tmp_path / "al", expect_clip={**CLIP, "kind": "timm"})
    # an aligner that records no identity cannot be vouched for
    aligner.source = None
    aligner.save(tmp_path / "anon")
    with pytest.raises(SpaceMismatchError, match="records no source encoder identity"):
        Aligner.load(tmp_path / "anon", expect_source=SOURCE)


def test_missing_or_corrupt_files_give_clear_errors(tmp_path):
    X, Y, _, _ = planted(200)
    fit_exact([(X, Y)], device="cpu").save(tmp_path / "al")
    with pytest.raises(ModelLoadError, match="missing"):
        Aligner.load(tmp_path / "nowhere")
    weights = tmp_path / "al" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="corrupt"):
        Aligner.load(tmp_path / "al")
    (tmp_path / "al" / "aligner.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        Aligner.load(tmp_path / "al")


def test_transform_refuses_features_of_another_width():
    aligner = fit_exact([planted(100)[:2]], device="cpu")
    with pytest.raises(SpaceMismatchError, match="width 10"):
        aligner.transform(torch.randn(5, 10))
    assert aligner.transform(torch.randn(24)).shape == (6,)


def test_rescale_vectors_matches_training_feature_variance_appendix_i():
    X, Y, _, _ = planted(1000, noise=0.1)
    aligner = fit_exact(iter_chunks(X, Y, 128), device="cpu")
    assert math.isclose(aligner.feature_variance, float(X.double().var(unbiased=False)), rel_tol=1e-6)
    head = torch.randn(7, 24) * 30.0  # classifier rows: same space, very different scale
    rescaled = aligner.rescale_vectors(head)
    assert math.isclose(element_variance(rescaled), aligner.feature_variance, rel_tol=1e-5)
    ratio = rescaled / head  # one constant for all rows and elements
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0, 0])))
    torch.testing.assert_close(aligner.align_vectors(head), aligner.transform(rescaled))
    sgd = fit_sgd(X, Y, epochs=1, device="cpu")
    assert math.isclose(sgd.feature_variance, aligner.feature_variance, rel_tol=1e-6)
    with pytest.raises(SpaceMismatchError):
        aligner.rescale_vectors(torch.randn(3, 5))


def test_evaluate_matches_hand_computation():
    # Identity aligner on 2-d vectors: predictions are X itself.
    aligner = Aligner(
        W=torch.eye(2), b=torch.zeros(2), feature_mean=torch.zeros(2), feature_variance=1.0, n_train=4, method="exact"
    )
    X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, 0.0]])
    Y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    # SSE = (2-1)^2 + (1^2 + (-1)^2) = 3; per-dim means of Y (0.5, 0.75):
    # SST = 4 * 0.25 + (0.75^2 + 3 * 0.25^2) = 1 + 0.75 = 1.75  ->  R² = 1 - 3 / 1.75
    # cosines: 1, 1, 1, 0  ->  mean 0.75
    class_vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 1])
    # aligned predictions: class 0, 1, tie->0, 0  -> 2 of 4 right; CLIP on Y: 0, 1, tie->0, 1 -> 3 of 4
    metrics = evaluate(aligner, X, Y, labels=labels, class_vectors=class_vectors, source_accuracy=0.8)
    assert metrics.n == 4
    assert math.isclose(metrics.r2, 1 - 3 / 1.75, rel_tol=1e-9)
    assert math.isclose(metrics.cosine, 0.75, rel_tol=1e-6)
    assert metrics.aligned_accuracy == 0.5
    assert metrics.clip_accuracy == 0.75
    assert math.isclose(metrics.retained_accuracy, 0.5 / 0.75)  # relative to the target (CLIP), as in the paper
    assert metrics.source_accuracy == 0.8 and math.isclose(metrics.accuracy_vs_source, 0.5 / 0.8)
    no_labels = evaluate(aligner, X, Y)
    assert no_labels.aligned_accuracy is None and no_labels.retained_accuracy is None
    with pytest.raises(ValueError, match="labels and class_vectors"):
        evaluate(aligner, X, Y, labels=labels)
    with pytest.raises(SpaceMismatchError):
        evaluate(aligner, X, Y, labels=labels, class_vectors=torch.randn(2, 3))


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_feature_files_round_trip_with_identities(tmp_path, suffix):
    X, Y, _, _ = planted(50)
    labels = torch.arange(50) % 3
    path = tmp_path / f"pairs{suffix}"
    save_feature_file(path, X, Y, labels=labels, class_vectors=torch.randn(3, 6), source=SOURCE, clip=CLIP)
    pairs = open_feature_file(path)
    assert (pairs.n, pairs.d_in, pairs.d_out) == (50, 24, 6)
    assert pairs.source.to_dict() == SOURCE and pairs.clip.to_dict() == CLIP
    assert torch.equal(pairs.rows("X", 10, 20), X[10:20])
    assert torch.equal(pairs.get("labels"), labels)
    assert pairs.get("nothing") is None
    np.savez(tmp_path / "bad.npz", X=X.numpy())
    with pytest.raises(T2CError, match="lacks"):
        open_feature_file(tmp_path / "bad.npz")
    with pytest.raises(T2CError, match="does not exist"):
        open_feature_file(tmp_path / "none.safetensors")
