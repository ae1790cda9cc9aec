"""The paper's SGD fit (Appendix D), kept as the reference baseline for the exact solver.

``SGDRecipe`` holds the recipe's settings (the paper's values by default) and ``fit_sgd`` trains
one linear layer with it on rescaled pairs, then undoes the scaling. The recipe is recorded in the
aligner's ``fit_info`` so a saved aligner says how it was trained.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from t2c_monitor.aligner.model import Aligner, element_variance
from t2c_monitor.device import resolve_device
from t2c_monitor.errors import T2CError
from t2c_monitor.features import check_pairs
from t2c_monitor.progress import progress_bar


@dataclass(frozen=True)
class SGDRecipe:
    """The paper's recipe: SGD(lr, momentum, weight_decay) with CosineAnnealingLR(t_max) stepped once
    per epoch, ``epochs`` passes in shuffled batches of ``batch_size`` (the last one partial), on
    features (and, with ``scale_targets``, CLIP targets) rescaled to element variance ``target_variance``."""

    epochs: int = 6
    batch_size: int = 100
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    t_max: int = 200
    target_variance: float = 4.5
    scale_targets: bool = True

    def __post_init__(self) -> None:
        for name, value in (("epochs", self.epochs), ("batch_size", self.batch_size), ("t_max", self.t_max)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not self.target_variance > 0:
            raise ValueError(f"target_variance must be > 0, got {self.target_variance}")


def fit_sgd(
    X: Tensor,
    Y: Tensor,
    recipe: SGDRecipe | None = None,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    **overrides: Any,
) -> Aligner:
    """An aligner trained by ``recipe`` (default: the paper's ``SGDRecipe()``), then the scaling undone.

    Keyword arguments named like the recipe's fields (``epochs=3``, ``lr=0.05``, ...) override it.
    Features are multiplied by one scalar ``s_x`` so the variance over all their elements is
    ``target_variance``; with ``scale_targets`` (what the authors' code does) the CLIP targets get
    their own ``s_y`` likewise. A layer ``y' = x' W' + b'`` trained on ``x' = s_x x``,
    ``y' = s_y y`` gives, in the original spaces, ``W = W' s_x / s_y`` and ``b = b' / s_y``. (The
    authors' code multiplies the bias by ``s_x / s_y`` too, which is wrong whenever ``s_x != 1``.)
    Batches are shuffled with ``seed``: the same inputs and seed give the same aligner.
    """
    X, Y = torch.as_tensor(X), torch.as_tensor(Y)
    check_pairs(X, Y)
    n, d_in = X.shape
    d_out = Y.shape[1]
    if n < 2:
        raise ValueError(f"X holds {n} pairs: fitting needs at least 2")
    recipe = replace(recipe or SGDRecipe(), **overrides)
    dev = resolve_device(device)
    started = time.perf_counter()
    feature_variance = element_variance(X)
    if not feature_variance > 0:
        raise ValueError("X has zero variance over its elements: nothing to fit")
    s_x = math.sqrt(recipe.target_variance / feature_variance)
    s_y = math.sqrt(recipe.target_variance / element_variance(Y)) if recipe.scale_targets else 1.0
    if not math.isfinite(s_y):
        raise ValueError("Y has zero variance over its elements: nothing to fit")

    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(d_in)  # torch.nn.Linear's default initialisation
    W_s = ((torch.rand((d_in, d_out), generator=generator) * 2 - 1) * bound).to(dev).requires_grad_()
    b_s = ((torch.rand(d_out, generator=generator) * 2 - 1) * bound).to(dev).requires_grad_()
    optimizer = torch.optim.SGD([W_s, b_s], lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.t_max)
    epoch_losses: list[float] = []
    batch_size = recipe.batch_size
    n_batches = math.ceil(n / batch_size)
    for epoch in range(recipe.epochs):
        order = torch.randperm(n, generator=generator)
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        with progress_bar(f"SGD epoch {epoch + 1}/{recipe.epochs}", n_batches, progress) as advance:
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                xb = X[idx].to(dev, torch.float32) * s_x
                yb = Y[idx].to(dev, torch.float32) * s_y
                optimizer.zero_grad(set_to_none=True)
                loss = F.mse_loss(torch.addmm(b_s, xb, W_s), yb)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                advance(1)
        scheduler.step()
        epoch_losses.append(float(loss_sum) / n_batches)
        if not math.isfinite(epoch_losses[-1]):
            raise T2CError(
                f"the SGD recipe diverged (mean loss {epoch_losses[-1]} in epoch {epoch + 1}); features with a large "
                "common offset do this at lr 0.01: use the exact solver (`--method exact`), or a smaller lr"
            )

    W = W_s.detach().to(torch.float64) * (s_x / s_y)
    b = b_s.detach().to(torch.float64) / s_y
    return Aligner(
        W=W,
        b=b,
        feature_mean=_column_mean(X),
        feature_variance=feature_variance,
        n_train=n,
        method="sgd",
        fit_info={
            **asdict(recipe),
            "scale_x": s_x,
            "scale_y": s_y,
            "seed": seed,
            "epoch_losses_scaled": epoch_losses,
            "device": str(dev),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )


def _column_mean(X: Tensor, chunk_rows: int = 65536) -> Tensor:
    total = torch.zeros(X.shape[1], dtype=torch.float64)
    for start in range(0, X.shape[0], chunk_rows):
        total += X[start : start + chunk_rows].to("cpu", torch.float64).sum(dim=0)
    return total / X.shape[0]
