"""Fitting the heads: a sparse (L1) multinomial logistic head on concepts, and a linear probe on raw features.

* ``fit_sparse_head``: L1-regularised softmax regression by FISTA (accelerated proximal gradient,
  soft-thresholding after each step; the step is 1 / the gradient's Lipschitz bound). The penalty
  is chosen on a validation split along a path from strong to weak (warm-started): the strongest
  penalty, i.e. the sparsest head, whose validation accuracy is within ``tolerance`` of the best.
  A sparse head is what makes the explanation short (the paper keeps a few concepts per class).
* ``fit_linear_probe``: L2-regularised softmax regression on standardised features by L-BFGS, its
  penalty chosen on the same validation split. It is the yardstick: a CBM is useful when it comes
  close to it.

Both take standardised inputs; deterministic for a given seed (full-batch, no sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

L1_PATH = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001)  # fractions of the penalty that zeroes every weight
L2_GRID = (1e-4, 1e-3, 1e-2)


@dataclass(frozen=True)
class HeadFit:
    weight: Tensor  # (C, K)
    bias: Tensor  # (C,)
    penalty: float
    val_accuracy: float
    path: list[tuple[float, float, int]]  # (penalty, validation accuracy, nonzero weights)


def _accuracy(weight: Tensor, bias: Tensor, x: Tensor, y: Tensor) -> float:
    return float(((x @ weight.T + bias).argmax(1) == y).float().mean()) if len(y) else 0.0


def _fista(x: Tensor, y: Tensor, n_classes: int, penalty: float, start: tuple[Tensor, Tensor], *,
           steps: int, lipschitz: float) -> tuple[Tensor, Tensor]:
    weight, bias = (t.clone() for t in start)
    prev_w, prev_b, t = weight.clone(), bias.clone(), 1.0
    step = 1.0 / lipschitz
    target = F.one_hot(y, n_classes).float()
    for _ in range(steps):
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        momentum = (t - 1) / t_next
        look_w = weight + momentum * (weight - prev_w)
        look_b = bias + momentum * (bias - prev_b)
        grad = (torch.softmax(x @ look_w.T + look_b, dim=1) - target) / len(y)
        new_w = look_w - step * (grad.T @ x)
        new_w = torch.sign(new_w) * torch.clamp(new_w.abs() - step * penalty, min=0.0)  # soft threshold
        prev_w, prev_b = weight, bias
        weight, bias, t = new_w, look_b - step * grad.sum(0), t_next
    return weight, bias


def fit_sparse_head(x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor, n_classes: int, *,
                    steps: int = 300, tolerance: float = 0.01, path: tuple[float, ...] = L1_PATH) -> HeadFit:
    """The sparsest L1 softmax head (on the path) whose validation accuracy is within ``tolerance`` of the best."""
    x_train, x_val = x_train.double(), x_val.double()
    n, k = x_train.shape
    lipschitz = 0.5 * float(torch.linalg.matrix_norm(torch.cat([x_train, torch.ones(n, 1, dtype=x_train.dtype)], 1),
                                                     ord=2)) ** 2 / n
    target = F.one_hot(y_train, n_classes).double()
    # the smallest penalty that keeps every weight at zero: the gradient at W = 0 with the best bias
    prior = target.mean(0).clamp_min(1e-12)
    grad0 = (prior[None] - target).T @ x_train / n
    max_penalty = float(grad0.abs().max()) or 1.0
    weight = torch.zeros(n_classes, k, dtype=torch.float64)
    bias = prior.log()
    fits = []
    for fraction in path:
        penalty = fraction * max_penalty
        weight, bias = _fista(x_train, y_train, n_classes, penalty, (weight, bias), steps=steps, lipschitz=lipschitz)
        fits.append((penalty, _accuracy(weight, bias, x_val, y_val), weight.clone(), bias.clone()))
    best = max(f[1] for f in fits)
    chosen = next(f for f in fits if f[1] >= best - tolerance)  # the path runs from sparse to dense
    return HeadFit(weight=chosen[2].float(), bias=chosen[3].float(), penalty=chosen[0], val_accuracy=chosen[1],
                   path=[(p, a, int((w != 0).sum())) for p, a, w, _ in fits])


def fit_linear_probe(x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor, n_classes: int, *,
                     grid: tuple[float, ...] = L2_GRID, max_iter: int = 100) -> HeadFit:
    """Softmax regression with the L2 penalty of ``grid`` that does best on the validation split."""
    x_train, x_val = x_train.double(), x_val.double()
    fits = []
    for penalty in grid:
        weight = torch.zeros(n_classes, x_train.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure(weight=weight, bias=bias, optimizer=optimizer, penalty=penalty):
            optimizer.zero_grad()
            loss = F.cross_entropy(x_train @ weight.T + bias, y_train) + penalty * (weight * weight).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        w, b = weight.detach(), bias.detach()
        fits.append((penalty, _accuracy(w, b, x_val, y_val), w, b))
    chosen = max(fits, key=lambda f: f[1])
    return HeadFit(weight=chosen[2].float(), bias=chosen[3].float(), penalty=chosen[0], val_accuracy=chosen[1],
                   path=[(p, a, int((w != 0).sum())) for p, a, w, _ in fits])


def standardise(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation per column (a constant column gets 1, so it stays 0)."""
    mean, std = x.mean(0), x.std(0)
    return mean, torch.where(std > 1e-8, std, torch.ones_like(std))
