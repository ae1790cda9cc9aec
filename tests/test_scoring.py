"""Contracts of cosine scoring and zero-shot classification."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from t2c_monitor.scoring import cosine_scores, zero_shot_accuracy, zero_shot_predict


def test_cosine_scores_match_hand_computation_and_ignore_scale() -> None:
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(10, 8, generator=gen)
    bank = F.normalize(torch.randn(3, 8, generator=gen), dim=1)
    expected = torch.tensor(
        [[float(F.cosine_similarity(e, v, dim=0)) for v in bank] for e in emb], dtype=torch.float32
    )
    scores = cosine_scores(emb * 7.5, bank)
    assert scores.shape == (10, 3) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_cosine_scores_batching_gives_the_same_result() -> None:
    gen = torch.Generator().manual_seed(1)
    emb, bank = torch.randn(37, 5, generator=gen), torch.randn(4, 5, generator=gen)
    torch.testing.assert_close(cosine_scores(emb, bank, batch_size=4), cosine_scores(emb, bank))


def test_zero_embedding_scores_zero_not_nan() -> None:
    scores = cosine_scores(torch.zeros(2, 4), torch.eye(4))
    assert torch.equal(scores, torch.zeros(2, 4))


def test_width_mismatch_names_the_argument() -> None:
    with pytest.raises(ValueError, match="bank_vectors"):
        cosine_scores(torch.randn(2, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="batch_size"):
        cosine_scores(torch.randn(2, 4), torch.randn(3, 4), batch_size=0)


def test_zero_shot_predicts_nearest_class_and_scores_accuracy() -> None:
    classes = torch.eye(3)
    emb = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 5.0], [0.1, 1.0, 0.0], [1.0, 0.0, 0.1]])
    assert zero_shot_predict(emb, classes).tolist() == [0, 2, 1, 0]
    assert zero_shot_accuracy(emb, classes, torch.tensor([0, 2, 1, 1])) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="labels"):
        zero_shot_accuracy(emb, classes, torch.tensor([0, 1]))
