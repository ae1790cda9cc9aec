"""The SGD aligner follows the paper's recipe (Appendix D) by default and records it in fit_info."""

from __future__ import annotations

import math

import torch

from t2c_monitor.aligner import element_variance, fit_sgd


def test_sgd_defaults_are_the_papers_recipe_and_are_recorded() -> None:
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(150, 8, generator=generator) * 3
    Y = X[:, :4] * 0.5 + 0.1 * torch.randn(150, 4, generator=generator)
    info = fit_sgd(X, Y, device="cpu").fit_info
    recipe = {key: info[key] for key in ("lr", "momentum", "weight_decay", "t_max", "epochs", "batch_size")}
    assert recipe == {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "t_max": 200, "epochs": 6, "batch_size": 100}
    assert info["target_variance"] == 4.5
    # the scales recorded are the ones that give features and targets element variance 4.5
    assert math.isclose(info["scale_x"] ** 2 * element_variance(X), 4.5, rel_tol=1e-6)
    assert math.isclose(info["scale_y"] ** 2 * element_variance(Y), 4.5, rel_tol=1e-6)
    assert len(info["epoch_losses_scaled"]) == 6
