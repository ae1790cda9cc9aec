"""The exact aligner fit: ordinary (optionally ridge) least squares, solved once from streamed sums.

``fit_exact`` accumulates the sufficient statistics (``X^T X``, ``X^T Y``, ``Y^T Y`` of shifted
rows, in float64, or ``precision="mixed"``: float32 chunk products added to float64 totals)
chunk by chunk, so the pairs never need to fit in memory, then solves the normal equations by
Cholesky (the minimum-norm pseudo-inverse when the feature covariance is singular).
``iter_chunks`` cuts in-memory pairs into its chunks.

``ridge="auto"`` chooses the penalty from the data, for the case users meet first: a few hundred of
their own images and an encoder with more features than that (768 for convnext_tiny, 2048 for a
ResNet-50). Unpenalised least squares then interpolates the training pairs (in-sample R² 1.0) and
generalises poorly: on 450 shapes-world pairs of 512 features, held-out R² 0.61 unpenalised
against 0.93 at a ridge of 1e-3. Every fifth training row is set aside while the sums are
accumulated (their own sums, so nothing is kept in memory), each penalty of ``RIDGE_GRID`` (times the
feature variance) is fitted on the rest and scored on them, and the best penalty is fitted on all
rows. One eigendecomposition serves the whole grid.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from t2c_monitor.aligner.model import Aligner
from t2c_monitor.device import resolve_device
from t2c_monitor.features import check_pairs
from t2c_monitor.progress import progress_bar


class _Moments:
    """Shifted sums for least squares, accumulated in float64.

    Each chunk's pairs are stacked into rows ``z = [x - shift_x, y - shift_y]`` and the totals are
    ``S = sum z^T z`` (which holds ``X^T X``, ``X^T Y`` and ``Y^T Y``), ``s = sum z`` and ``n``. The
    shift is the first chunk's means, so a large common offset in the features does not cancel
    catastrophically when the sums are centred. ``precision``: ``float64`` computes each chunk's
    product in float64 too; ``mixed`` computes it in float32 (about twice as fast on CPU) and adds
    it to the float64 totals.

    One product of the stacked rows instead of ``X^T X`` and ``X^T Y`` apart: on CPU it is a
    single BLAS ``syrk`` (one triangle), and one call of width 2560 runs about 6% faster than
    syrk + gemm at 2048 and 512 although it also computes ``Y^T Y`` (which gives the fit's
    in-sample R² without a second pass). The shifted chunk is written into a reused buffer. Every
    CPU product goes through scipy's BLAS: mixing in torch's matmul made two thread pools (OpenMP
    and the BLAS's own) take turns spinning on the same two cores.
    """

    def __init__(self, d_in: int, d_out: int, device: torch.device, precision: str, blas: bool | None = None) -> None:
        """``blas``: scipy's BLAS (the default on CPU) or torch's matmul (the default on other devices)."""
        self.d_in, self.d_out = d_in, d_out
        width = d_in + d_out
        self.device = device
        self.n = 0
        self.shift: Tensor | None = None
        self.chunk_dtype = torch.float64 if precision == "float64" else torch.float32
        self._cpu_blas = device.type == "cpu" if blas is None else blas
        if self._cpu_blas and device.type != "cpu":
            raise ValueError(f"scipy's BLAS sums on the CPU, not on {device}")
        if self._cpu_blas:  # syrk fills the upper triangle of a Fortran-ordered array in place
            self._np_dtype = np.float64 if precision == "float64" else np.float32
            self._S_np = np.zeros((width, width), dtype=np.float64, order="F")
            self.S = torch.from_numpy(self._S_np)
            self._buffer: np.ndarray | None = None
            self._S32: np.ndarray | None = None
        else:
            self.S = torch.zeros((width, width), dtype=torch.float64, device=device)
        self.s = torch.zeros(width, dtype=torch.float64, device=device)

    def add(self, X: Tensor, Y: Tensor) -> None:
        if self.shift is None:
            self.shift = torch.cat(
                [X.to(self.device, torch.float64).mean(dim=0), Y.to(self.device, torch.float64).mean(dim=0)]
            )
        if self._cpu_blas:
            self._add_blas(X, Y)
        else:
            Z = torch.cat([X.to(self.device, self.chunk_dtype), Y.to(self.device, self.chunk_dtype)], dim=1)
            Z -= self.shift.to(self.chunk_dtype)
            self.S += (Z.T @ Z).to(torch.float64)
            # a reduction in the chunk's own dtype, then float64 (a float64-dtype sum over float32
            # rows converts element by element: 20x slower)
            self.s += Z.sum(dim=0).to(torch.float64)
        self.n += X.shape[0]

    def _shifted(self, X: Tensor, Y: Tensor) -> np.ndarray:
        """The stacked chunk minus the shift, in the chunk dtype, written into a buffer reused across chunks."""
        rows = X.shape[0]
        if self._buffer is None or self._buffer.shape[0] < rows:
            self._buffer = np.empty((rows, self.d_in + self.d_out), self._np_dtype)
        z = self._buffer[:rows]
        shift = self.shift.numpy().astype(self._np_dtype)
        for src, cols in ((X, slice(0, self.d_in)), (Y, slice(self.d_in, None))):
            src = src.detach().cpu()
            if src.dtype not in (torch.float32, torch.float64):  # half, bfloat16, integers: numpy has no view
                src = src.to(self.chunk_dtype)
            np.subtract(src.numpy(), shift[cols], out=z[:, cols])
        return z

    def _add_blas(self, X: Tensor, Y: Tensor) -> None:
        from scipy.linalg import blas

        z = self._shifted(X, Y)
        # z.T of a C-ordered (n, d) array is a Fortran-ordered (d, n) array: A A^T = Z^T Z, no copy.
        if self._np_dtype == np.float64:
            blas.dsyrk(1.0, z.T, beta=1.0, c=self._S_np, trans=0, lower=0, overwrite_c=1)
        else:  # into a reused float32 buffer: a fresh 26 MB result per chunk cost its page faults
            if self._S32 is None:
                self._S32 = np.zeros(self._S_np.shape, dtype=np.float32, order="F")
            blas.ssyrk(1.0, z.T, beta=0.0, c=self._S32, trans=0, lower=0, overwrite_c=1)
            self._S_np += self._S32
        self.s += torch.from_numpy(z.sum(axis=0).astype(np.float64))

    def stats(self) -> _Stats:
        """The covariance of the stacked rows around their mean, the mean and the row count."""
        n = self.n
        if self._cpu_blas:  # the upper triangle of a Fortran array is the lower one of its C-ordered transpose
            lower = torch.from_numpy(self._S_np.T)
            C = torch.tril(lower)
            C += torch.tril(lower, diagonal=-1).T
        else:
            C = self.S.clone()
        C.sub_(torch.outer(self.s, self.s), alpha=1.0 / n).div_(n)  # in place: the sums are (2560, 2560)
        return _Stats(n=n, C=C, mean=self.shift + self.s / n, d_in=self.d_in)


@dataclass
class _Stats:
    """Covariance (population scale) and mean of stacked rows ``[x, y]``, of ``n`` rows."""

    n: int
    C: Tensor
    mean: Tensor
    d_in: int

    def blocks(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(C_xx, C_xy, C_yy, mean_x, mean_y)``."""
        d = self.d_in
        return self.C[:d, :d], self.C[:d, d:], self.C[d:, d:], self.mean[:d], self.mean[d:]

    def merged(self, other: _Stats) -> _Stats:
        """The statistics of both sets of rows together (the parallel-variance formula)."""
        n = self.n + other.n
        mean = (self.n * self.mean + other.n * other.mean) / n
        C = torch.zeros_like(self.C)
        for part in (self, other):
            offset = part.mean - mean
            C += (part.n / n) * (part.C + torch.outer(offset, offset))
        return _Stats(n=n, C=C, mean=mean, d_in=self.d_in)


# Penalties ``ridge="auto"`` tries, as multiples of the feature variance (0: none).
RIDGE_GRID = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
AUTO_VALIDATION_EVERY = 5  # every fifth training row scores the penalties
AUTO_MIN_ROWS = 20  # below this, "auto" fits without a penalty (too few rows to score one)


def _feature_variance(C_xx: Tensor, mean_x: Tensor) -> float:
    """Pooled element variance: average per-dimension variance plus the spread of the per-dimension means."""
    d_in = mean_x.shape[0]
    return float((torch.diagonal(C_xx).sum() + ((mean_x - mean_x.mean()) ** 2).sum()) / d_in)


def _choose_ridge(fit: _Stats, validation: _Stats, *, eps: float) -> tuple[float, list[dict[str, float]]]:
    """The penalty of ``RIDGE_GRID`` whose fit on ``fit`` rows predicts the ``validation`` rows best.

    The validation residual comes from the sums alone: for ``W``, ``b = m_y - m_x W`` fitted on one
    part and a part with covariance ``C`` and means ``v_x``, ``v_y``, the mean squared residual is
    ``tr(W^T C_xx W) - 2 tr(W^T C_xy) + tr(C_yy) + |(v_x - m_x) W + m_y - v_y|^2``.
    """
    C_xx, C_xy, _, m_x, m_y = fit.blocks()
    V_xx, V_xy, V_yy, v_x, v_y = validation.blocks()
    scale = _feature_variance(C_xx, m_x)
    eigenvalues, eigenvectors = torch.linalg.eigh(C_xx)
    projected = eigenvectors.T @ C_xy
    tiny = C_xx.shape[0] * eps * max(float(eigenvalues.max()), 0.0)  # eps: the sums' precision
    total = float(torch.trace(V_yy))  # pooled over the output dimensions, each around its mean, as `evaluate`
    search, best = [], (math.inf, 0.0)
    for factor in RIDGE_GRID:
        ridge = factor * scale
        shifted = eigenvalues + ridge
        keep = shifted > tiny  # the minimum-norm solution where the penalty leaves the covariance singular
        inverse = torch.where(keep, 1.0 / torch.where(keep, shifted, torch.ones_like(shifted)), 0.0)
        W = eigenvectors @ (inverse[:, None] * projected)
        offset = (v_x - m_x) @ W + m_y - v_y
        residual = (float((W * (V_xx @ W)).sum()) - 2.0 * float((W * V_xy).sum()) + float(torch.trace(V_yy))
                    + float(offset @ offset))
        search.append({"ridge": ridge, "validation_r2": round(1.0 - residual / total, 6) if total > 0 else None})
        if residual < best[0]:
            best = (residual, ridge)
    return best[1], search


def _solve_normal_equations(C_xx: Tensor, C_xy: Tensor, ridge: float, *,
                            eps: float = torch.finfo(torch.float64).eps) -> tuple[Tensor, str]:
    """Solve ``(C_xx + ridge I) W = C_xy`` by Cholesky; minimum-norm pseudo-inverse if singular.

    ``eps`` is the relative precision of the sums: float64's, or float32's for sums of float32 chunk
    products, whose rounding makes a singular covariance (fewer pairs than features) look invertible,
    and solving it then amplifies that rounding into the weights (held-out R² of -5,700 on 1,000 pairs
    of 2,048 features in ``bench/aligner.py``)."""
    d = C_xx.shape[0]
    A = C_xx + ridge * torch.eye(d, dtype=C_xx.dtype, device=C_xx.device)
    L, info = torch.linalg.cholesky_ex(A)
    scale = float(torch.diagonal(A).abs().max())
    if int(info) == 0 and scale > 0:
        pivots = torch.diagonal(L) ** 2
        if float(pivots.min()) > d * eps * scale:
            return torch.cholesky_solve(C_xy, L), "cholesky"
    warnings.warn(
        f"the feature covariance is singular or nearly so (ridge={ridge}): using the minimum-norm "
        "least-squares solution; pass a ridge > 0 (e.g. 1e-4 times the feature variance), or 'auto' to choose one "
        "on the data, for a stable fit",
        RuntimeWarning,
        stacklevel=3,
    )
    eigvals, eigvecs = torch.linalg.eigh(A)
    keep = eigvals > d * eps * max(float(eigvals.max()), 0.0)
    inv = torch.where(keep, 1.0 / torch.where(keep, eigvals, torch.ones_like(eigvals)), torch.zeros_like(eigvals))
    return eigvecs @ (inv[:, None] * (eigvecs.T @ C_xy)), "min-norm pseudo-inverse (singular covariance)"


def fit_exact(
    chunks: Iterable[tuple[Tensor, Tensor]],
    *,
    ridge: float | str = 0.0,
    progress: bool = False,
    device: str | torch.device | None = None,
    total_rows: int | None = None,
    precision: str = "float64",
) -> Aligner:
    """Least-squares aligner from ``(X_chunk, Y_chunk)`` pairs, streamed; solved once in float64.

    Minimises ``mean_i ||x_i W + b - y_i||^2 + ridge * ||W||_F^2`` (the bias is not penalised), so
    ``ridge`` is on the scale of the feature variance and independent of the number of rows;
    ``"auto"`` chooses it on every fifth row (see the module's docstring; ``fit_info`` records the
    penalties tried and their validation R²). Chunks can come from a generator reading a file, so
    the pairs never need to fit in memory.
    ``total_rows`` only sizes the progress bar. ``precision="mixed"`` computes each chunk's products
    in float32 (on shifted rows) before adding them to the float64 totals: about twice as fast on
    CPU, at a relative error near 1e-6 in the sums.
    """
    auto = ridge == "auto"
    if not auto and (isinstance(ridge, str) or ridge < 0 or not math.isfinite(ridge)):
        raise ValueError(f"ridge must be 'auto' or a finite number >= 0, got {ridge!r}")
    if precision not in ("float64", "mixed"):
        raise ValueError(f"precision must be 'float64' or 'mixed', got {precision!r}")
    dev = resolve_device(device)
    started = time.perf_counter()
    moments: _Moments | None = None
    held: _Moments | None = None  # with "auto": every fifth row, to score the penalties
    rows = 0
    with progress_bar("accumulating X^T X, X^T Y", total_rows, progress) as advance:
        for X, Y in chunks:
            X, Y = torch.as_tensor(X), torch.as_tensor(Y)
            check_pairs(X, Y)
            if X.shape[0] == 0:
                continue
            if moments is None:
                moments = _Moments(X.shape[1], Y.shape[1], dev, precision)
                held = _Moments(X.shape[1], Y.shape[1], dev, precision) if auto else None
            elif (X.shape[1], Y.shape[1]) != (moments.d_in, moments.d_out):
                raise ValueError(
                    f"chunk widths changed from {(moments.d_in, moments.d_out)} to {(X.shape[1], Y.shape[1])}: "
                    "every chunk must hold features of the same two models"
                )
            if held is not None:
                aside = torch.arange(rows, rows + X.shape[0]) % AUTO_VALIDATION_EVERY == AUTO_VALIDATION_EVERY - 1
                if bool(aside.any()):
                    held.add(X[aside], Y[aside])
                if not bool(aside.all()):
                    moments.add(X[~aside], Y[~aside])
            else:
                moments.add(X, Y)
            rows += X.shape[0]
            advance(X.shape[0])
    if rows < 2:
        raise ValueError(f"chunks held {rows} pairs: fitting needs at least 2")
    search: list[dict[str, float]] | None = None
    sums_eps = torch.finfo(torch.float64 if precision == "float64" else torch.float32).eps  # see _solve_normal_...
    if held is None:
        stats = moments.stats()
    elif rows < AUTO_MIN_ROWS:
        stats, ridge = (moments.stats().merged(held.stats()) if held.n else moments.stats()), 0.0
    else:
        fit_part, validation = moments.stats(), held.stats()
        ridge, search = _choose_ridge(fit_part, validation, eps=sums_eps)
        stats = fit_part.merged(validation)
    C_xx, C_xy, C_yy, mean_x, mean_y = stats.blocks()
    W, solver = _solve_normal_equations(C_xx, C_xy, ridge, eps=sums_eps)
    b = mean_y - mean_x @ W
    # In-sample R², pooled as in `evaluate`, from the sums: the residual covariance's trace is
    # tr(C_yy) - 2 tr(W^T C_xy) + tr(W^T C_xx W) (the bias makes the residuals' mean zero).
    total = float(torch.trace(C_yy))
    residual = total - 2.0 * float((W * C_xy).sum()) + float((W * (C_xx @ W)).sum())
    r2_train = 1.0 - residual / total if total > 0 else float("nan")
    n = stats.n
    feature_variance = _feature_variance(C_xx, mean_x)
    fit_info = {"ridge": ridge}
    if auto:
        fit_info.update(ridge_chosen="auto", ridge_search=search if search is not None else
                        f"fewer than {AUTO_MIN_ROWS} rows: no penalty")
    return Aligner(
        W=W,
        b=b,
        feature_mean=mean_x,
        feature_variance=feature_variance,
        n_train=n,
        method="exact",
        fit_info={
            **fit_info,
            "precision": precision,
            "solver": solver,
            "r2_train": round(r2_train, 6),
            "device": str(dev),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )


def iter_chunks(X: Tensor, Y: Tensor, chunk_rows: int = 8192) -> Iterator[tuple[Tensor, Tensor]]:
    """Split in-memory pairs into ``fit_exact`` chunks."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    for start in range(0, X.shape[0], chunk_rows):
        yield X[start : start + chunk_rows], Y[start : start + chunk_rows]
