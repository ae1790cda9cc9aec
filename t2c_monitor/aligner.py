"""The aligner: one affine map from a source encoder's feature space into CLIP image space.

``z -> z @ W + b`` with ``W`` stored as ``(d_in, d_out)`` (the paper writes ``W^T z + b``). Two
ways to fit it:

- ``fit_exact``: ordinary (optionally ridge) least squares, solved once from sufficient statistics
  accumulated chunk by chunk in float64, so the pairs never need to fit in memory;
- ``fit_sgd``: the paper's recipe (Appendix D), kept as the reference baseline.

``evaluate`` scores an aligner on held-out pairs (R², cosine, zero-shot accuracies), and
``Aligner.save`` / ``Aligner.load`` keep it with the identities of the two models whose spaces it
joins, so an aligner is never applied to features of another encoder or compared with text
vectors of another CLIP model. Identities are plain dicts here (``ModelIdentity.to_dict()``) so
this module does not import the model libraries.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from t2c_monitor.artifacts import ArtifactFormat
from t2c_monitor.device import resolve_device
from t2c_monitor.errors import ModelLoadError, SpaceMismatchError, T2CError
from t2c_monitor.identity import describe, same_space
from t2c_monitor.progress import progress_bar

WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "aligner.json"
FORMAT = "t2c-aligner"
FORMAT_VERSION = 1
REFIT_HINT = "refit the aligner for this encoder/CLIP pair with `t2c aligner fit`"
ALIGNER_FORMAT = ArtifactFormat(label="aligner", marker=FORMAT, version=FORMAT_VERSION, metadata_file=METADATA_FILE,
                                tensors_file=WEIGHTS_FILE, checksum_key="weights_sha256",
                                written_by="`t2c aligner fit --out`", hint=REFIT_HINT)


# --------------------------------------------------------------------------------------------
# The aligner object


@dataclass
class Aligner:
    """A fitted affine map from source features to CLIP image embeddings (not normalised).

    ``feature_mean`` and ``feature_variance`` describe the training features: the variance over
    all their elements is what arbitrary vectors (classification-head rows) are rescaled to
    before aligning them (Appendix I of the paper).
    """

    W: Tensor
    b: Tensor
    feature_mean: Tensor
    feature_variance: float
    n_train: int
    method: str
    source: dict | None = None
    clip: dict | None = None
    metrics: dict = field(default_factory=dict)
    fit_info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.W.ndim != 2:
            raise ValueError(f"W must be 2-d (d_in, d_out), got shape {tuple(self.W.shape)}")
        if tuple(self.b.shape) != (self.W.shape[1],):
            raise ValueError(f"b must have shape ({self.W.shape[1]},), got {tuple(self.b.shape)}")
        if tuple(self.feature_mean.shape) != (self.W.shape[0],):
            raise ValueError(f"feature_mean must have shape ({self.W.shape[0]},), got {tuple(self.feature_mean.shape)}")
        self.W = self.W.detach().to("cpu", torch.float32).contiguous()
        self.b = self.b.detach().to("cpu", torch.float32).contiguous()
        self.feature_mean = self.feature_mean.detach().to("cpu", torch.float32).contiguous()

    @property
    def d_in(self) -> int:
        return int(self.W.shape[0])

    @property
    def d_out(self) -> int:
        return int(self.W.shape[1])

    def transform(self, features: Tensor, batch_size: int = 65536) -> Tensor:
        """Map source features ``(n, d_in)`` (or one ``(d_in,)`` vector) into CLIP space.

        Runs on the features' device and returns float32 there; not normalised.
        """
        features = torch.as_tensor(features)
        single = features.ndim == 1
        batch = features.unsqueeze(0) if single else features
        if batch.ndim != 2:
            raise ValueError(f"features must be 1-d or 2-d, got shape {tuple(features.shape)}")
        if batch.shape[1] != self.d_in:
            raise SpaceMismatchError(
                f"features have width {batch.shape[1]} but this aligner maps {self.d_in}-d features of "
                f"source {describe(self.source)}: embed the images with that encoder, or {REFIT_HINT}"
            )
        W = self.W.to(batch.device)
        b = self.b.to(batch.device)
        out = torch.empty((batch.shape[0], self.d_out), dtype=torch.float32, device=batch.device)
        with torch.inference_mode():
            for start in range(0, batch.shape[0], batch_size):
                chunk = batch[start : start + batch_size].to(torch.float32)
                out[start : start + chunk.shape[0]] = torch.addmm(b, chunk, W)
        return out[0] if single else out

    def rescale_vectors(self, vectors: Tensor) -> Tensor:
        """Scale vectors by one constant so the variance over all their elements equals the training features'.

        Appendix I: classification-head rows live in feature space but with a very different
        norm than image features, which puts them out of distribution for the aligner.
        """
        vectors = torch.as_tensor(vectors)
        if vectors.shape[-1] != self.d_in:
            raise SpaceMismatchError(
                f"vectors have width {vectors.shape[-1]} but this aligner maps {self.d_in}-d features of "
                f"source {describe(self.source)}: pass vectors of that feature space, or {REFIT_HINT}"
            )
        variance = element_variance(vectors)
        if not variance > 0.0:
            raise ValueError("vectors have zero variance over their elements: nothing to rescale")
        return (vectors.to(torch.float32) * math.sqrt(self.feature_variance / variance)).to(torch.float32)

    def align_vectors(self, vectors: Tensor, rescale: bool = True) -> Tensor:
        """Align arbitrary feature-space vectors (e.g. classifier rows), rescaled first per Appendix I."""
        return self.transform(self.rescale_vectors(vectors) if rescale else vectors)

    def save(self, path: str | Path) -> None:
        """Write the aligner to directory ``path``: ``weights.safetensors`` and ``aligner.json``."""
        ALIGNER_FORMAT.write(path, {"W": self.W, "b": self.b, "feature_mean": self.feature_mean}, {
            "d_in": self.d_in, "d_out": self.d_out, "method": self.method, "source": self.source,
            "clip": self.clip, "feature_variance": self.feature_variance, "n_train": self.n_train,
            "metrics": self.metrics, "fit_info": self.fit_info,
        })

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        expect_source: dict | None = None,
        expect_clip: dict | None = None,
    ) -> Aligner:
        """Read an aligner saved by ``save``; refuse it when it joins other spaces than expected.

        ``expect_source`` / ``expect_clip`` are ``ModelIdentity.to_dict()`` of the encoder and CLIP
        model the caller will use; they must match the stored ones in kind, weights_sha256 and dim.
        """
        directory = Path(path)
        meta, tensors = ALIGNER_FORMAT.read(directory, ("W", "b", "feature_mean"))
        try:
            aligner = cls(
                W=tensors["W"],
                b=tensors["b"],
                feature_mean=tensors["feature_mean"],
                feature_variance=float(meta["feature_variance"]),
                n_train=int(meta["n_train"]),
                method=str(meta["method"]),
                source=meta.get("source"),
                clip=meta.get("clip"),
                metrics=meta.get("metrics") or {},
                fit_info=meta.get("fit_info") or {},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"aligner {directory} is incomplete or inconsistent ({exc!r}): {REFIT_HINT}") from exc
        if (aligner.d_in, aligner.d_out) != (meta.get("d_in"), meta.get("d_out")):
            raise ModelLoadError(
                f"aligner weights in {directory / WEIGHTS_FILE} are {aligner.d_in}->{aligner.d_out} but "
                f"{directory / METADATA_FILE} says "
                f"{meta.get('d_in')}->{meta.get('d_out')}: {REFIT_HINT}"
            )
        aligner.check_models(source=expect_source, clip=expect_clip, where=str(directory))
        return aligner

    def check_models(self, *, source: dict | None = None, clip: dict | None = None, where: str = "") -> None:
        """Refuse use with another source encoder or CLIP model than the aligner was fitted for.

        ``source`` / ``clip`` are ``ModelIdentity.to_dict()`` of the models in use (None: not
        checked); they must match the recorded ones in kind, weights_sha256 and dim. The message
        names both models. ``where`` names the aligner (its directory) in that message.
        """
        _check_identity("source encoder", self.source, source, self.d_in, where)
        _check_identity("CLIP model", self.clip, clip, self.d_out, where)


def _check_identity(role: str, stored: dict | None, expected: dict | None, width: int, where: str) -> None:
    """Refuse an aligner whose recorded model differs from the one the caller will use."""
    if expected is None:
        return
    name = f"aligner {where}" if where else "the aligner"
    if stored is None:
        raise SpaceMismatchError(
            f"{name} records no {role} identity, so it cannot be checked against "
            f"{describe(expected)}: {REFIT_HINT} (it records both identities)"
        )
    if not same_space(stored, expected) or expected.get("dim") != width:
        raise SpaceMismatchError(
            f"{name} was fitted for {role} {describe(stored)}, but the {role} in use is "
            f"{describe(expected)}: {REFIT_HINT}"
        )


# --------------------------------------------------------------------------------------------
# Statistics shared by the solvers


def element_variance(values: Tensor, chunk_rows: int = 65536) -> float:
    """Variance over all elements of a tensor (one pooled number, around the global mean), in float64."""
    flat = values.reshape(-1, values.shape[-1]) if values.ndim > 1 else values.reshape(1, -1)
    total, total_sq, count = 0.0, 0.0, flat.numel()
    if count == 0:
        raise ValueError("values is empty: the variance of no elements is undefined")
    for start in range(0, flat.shape[0], chunk_rows):
        chunk = flat[start : start + chunk_rows].to(torch.float64)
        total += float(chunk.sum())
        total_sq += float((chunk * chunk).sum())
    mean = total / count
    return max(total_sq / count - mean * mean, 0.0)


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

    def centred(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Covariance-scale sums around the data means, and the means: ``(C_xx, C_xy, C_yy, mean_x, mean_y)``."""
        n, d = self.n, self.d_in
        if self._cpu_blas:  # the upper triangle of a Fortran array is the lower one of its C-ordered transpose
            lower = torch.from_numpy(self._S_np.T)
            C = torch.tril(lower)
            C += torch.tril(lower, diagonal=-1).T
        else:
            C = self.S.clone()
        C.sub_(torch.outer(self.s, self.s), alpha=1.0 / n).div_(n)  # in place: the sums are (2560, 2560)
        mean = self.shift + self.s / n
        return C[:d, :d], C[:d, d:], C[d:, d:], mean[:d], mean[d:]


def _solve_normal_equations(C_xx: Tensor, C_xy: Tensor, ridge: float) -> tuple[Tensor, str]:
    """Solve ``(C_xx + ridge I) W = C_xy`` by Cholesky; minimum-norm pseudo-inverse if singular."""
    d = C_xx.shape[0]
    A = C_xx + ridge * torch.eye(d, dtype=C_xx.dtype, device=C_xx.device)
    L, info = torch.linalg.cholesky_ex(A)
    scale = float(torch.diagonal(A).abs().max())
    if int(info) == 0 and scale > 0:
        pivots = torch.diagonal(L) ** 2
        if float(pivots.min()) > d * torch.finfo(torch.float64).eps * scale:
            return torch.cholesky_solve(C_xy, L), "cholesky"
    warnings.warn(
        f"the feature covariance is singular or nearly so (ridge={ridge}): using the minimum-norm "
        "least-squares solution; pass a ridge > 0 (e.g. 1e-4 times the feature variance) for a stable fit",
        RuntimeWarning,
        stacklevel=3,
    )
    eigvals, eigvecs = torch.linalg.eigh(A)
    keep = eigvals > d * torch.finfo(torch.float64).eps * max(float(eigvals.max()), 0.0)
    inv = torch.where(keep, 1.0 / torch.where(keep, eigvals, torch.ones_like(eigvals)), torch.zeros_like(eigvals))
    return eigvecs @ (inv[:, None] * (eigvecs.T @ C_xy)), "min-norm pseudo-inverse (singular covariance)"


# --------------------------------------------------------------------------------------------
# Fitting


def fit_exact(
    chunks: Iterable[tuple[Tensor, Tensor]],
    *,
    ridge: float = 0.0,
    progress: bool = False,
    device: str | torch.device | None = None,
    total_rows: int | None = None,
    precision: str = "float64",
) -> Aligner:
    """Least-squares aligner from ``(X_chunk, Y_chunk)`` pairs, streamed; solved once in float64.

    Minimises ``mean_i ||x_i W + b - y_i||^2 + ridge * ||W||_F^2`` (the bias is not penalised), so
    ``ridge`` is on the scale of the feature variance and independent of the number of rows.
    Chunks can come from a generator reading a file, so the pairs never need to fit in memory.
    ``total_rows`` only sizes the progress bar. ``precision="mixed"`` computes each chunk's products
    in float32 (on shifted rows) before adding them to the float64 totals: about twice as fast on
    CPU, at a relative error near 1e-6 in the sums.
    """
    if ridge < 0 or not math.isfinite(ridge):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge}")
    if precision not in ("float64", "mixed"):
        raise ValueError(f"precision must be 'float64' or 'mixed', got {precision!r}")
    dev = resolve_device(device)
    started = time.perf_counter()
    moments: _Moments | None = None
    with progress_bar("accumulating X^T X, X^T Y", total_rows, progress) as advance:
        for X, Y in chunks:
            X, Y = torch.as_tensor(X), torch.as_tensor(Y)
            _check_pairs(X, Y)
            if X.shape[0] == 0:
                continue
            if moments is None:
                moments = _Moments(X.shape[1], Y.shape[1], dev, precision)
            elif (X.shape[1], Y.shape[1]) != (moments.d_in, moments.d_out):
                raise ValueError(
                    f"chunk widths changed from {(moments.d_in, moments.d_out)} to {(X.shape[1], Y.shape[1])}: "
                    "every chunk must hold features of the same two models"
                )
            moments.add(X, Y)
            advance(X.shape[0])
    if moments is None or moments.n < 2:
        raise ValueError(f"chunks held {0 if moments is None else moments.n} pairs: fitting needs at least 2")
    C_xx, C_xy, C_yy, mean_x, mean_y = moments.centred()
    W, solver = _solve_normal_equations(C_xx, C_xy, ridge)
    b = mean_y - mean_x @ W
    # In-sample R², pooled as in `evaluate`, from the sums: the residual covariance's trace is
    # tr(C_yy) - 2 tr(W^T C_xy) + tr(W^T C_xx W) (the bias makes the residuals' mean zero).
    total = float(torch.trace(C_yy))
    residual = total - 2.0 * float((W * C_xy).sum()) + float((W * (C_xx @ W)).sum())
    r2_train = 1.0 - residual / total if total > 0 else float("nan")
    n, d_in = moments.n, mean_x.shape[0]
    # Pooled element variance: average per-dimension variance plus the spread of the per-dimension means.
    feature_variance = float((torch.diagonal(C_xx).sum() + ((mean_x - mean_x.mean()) ** 2).sum()) / d_in)
    return Aligner(
        W=W,
        b=b,
        feature_mean=mean_x,
        feature_variance=feature_variance,
        n_train=n,
        method="exact",
        fit_info={
            "ridge": ridge,
            "precision": precision,
            "solver": solver,
            "r2_train": round(r2_train, 6),
            "device": str(dev),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )


def fit_sgd(
    X: Tensor,
    Y: Tensor,
    *,
    epochs: int = 6,
    batch_size: int = 100,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    t_max: int = 200,
    target_variance: float = 4.5,
    scale_targets: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Aligner:
    """The paper's recipe (Appendix D): SGD on MSE after rescaling, then the scaling undone.

    Features are multiplied by one scalar ``s_x`` so the variance over all their elements is
    ``target_variance``; with ``scale_targets`` (what the authors' code does) the CLIP targets get
    their own ``s_y`` likewise. A layer ``y' = x' W' + b'`` trained on ``x' = s_x x``,
    ``y' = s_y y`` gives, in the original spaces, ``W = W' s_x / s_y`` and ``b = b' / s_y``. (The
    authors' code multiplies the bias by ``s_x / s_y`` too, which is wrong whenever ``s_x != 1``.)
    SGD(lr, momentum, weight_decay), CosineAnnealingLR(T_max) stepped once per epoch, shuffled
    batches (the last one partial), seeded: the same inputs and seed give the same aligner.
    """
    X, Y = torch.as_tensor(X), torch.as_tensor(Y)
    _check_pairs(X, Y)
    n, d_in = X.shape
    d_out = Y.shape[1]
    if n < 2:
        raise ValueError(f"X holds {n} pairs: fitting needs at least 2")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("t_max", t_max)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not target_variance > 0:
        raise ValueError(f"target_variance must be > 0, got {target_variance}")
    dev = resolve_device(device)
    started = time.perf_counter()
    feature_variance = element_variance(X)
    if not feature_variance > 0:
        raise ValueError("X has zero variance over its elements: nothing to fit")
    s_x = math.sqrt(target_variance / feature_variance)
    s_y = math.sqrt(target_variance / element_variance(Y)) if scale_targets else 1.0
    if not math.isfinite(s_y):
        raise ValueError("Y has zero variance over its elements: nothing to fit")

    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(d_in)  # torch.nn.Linear's default initialisation
    W_s = ((torch.rand((d_in, d_out), generator=generator) * 2 - 1) * bound).to(dev).requires_grad_()
    b_s = ((torch.rand(d_out, generator=generator) * 2 - 1) * bound).to(dev).requires_grad_()
    optimizer = torch.optim.SGD([W_s, b_s], lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max)
    epoch_losses: list[float] = []
    n_batches = math.ceil(n / batch_size)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        with progress_bar(f"SGD epoch {epoch + 1}/{epochs}", n_batches, progress) as advance:
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
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "t_max": t_max,
            "target_variance": target_variance,
            "scale_targets": scale_targets,
            "scale_x": s_x,
            "scale_y": s_y,
            "seed": seed,
            "epoch_losses_scaled": epoch_losses,
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


def _check_pairs(X: Tensor, Y: Tensor) -> None:
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(f"X and Y must be 2-d, got shapes {tuple(X.shape)} and {tuple(Y.shape)}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have one row per image each, got {X.shape[0]} and {Y.shape[0]} rows")
    if not (X.is_floating_point() and Y.is_floating_point()):
        raise ValueError(f"X and Y must be floating point, got {X.dtype} and {Y.dtype}")


def _column_mean(X: Tensor, chunk_rows: int = 65536) -> Tensor:
    total = torch.zeros(X.shape[1], dtype=torch.float64)
    for start in range(0, X.shape[0], chunk_rows):
        total += X[start : start + chunk_rows].to("cpu", torch.float64).sum(dim=0)
    return total / X.shape[0]


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class AlignmentMetrics:
    """How well an aligner predicts CLIP embeddings on held-out pairs.

    ``r2``: 1 - SSE/SST pooled over all output dimensions, SST around each dimension's mean (the
    paper's coefficient of determination). ``cosine``: mean cosine between aligned and true CLIP
    embeddings. With labels and class text vectors: ``aligned_accuracy`` (zero-shot accuracy of
    aligned features), ``clip_accuracy`` (of the true CLIP embeddings) and ``retained_accuracy`` =
    aligned / CLIP accuracy (the paper's definition: relative to the *target* model, Appendix A).
    ``source_accuracy`` (the source model's own classifier accuracy, when given) and
    ``accuracy_vs_source`` = aligned / source accuracy are reported alongside, not instead.
    """

    n: int
    r2: float
    cosine: float
    aligned_accuracy: float | None = None
    clip_accuracy: float | None = None
    retained_accuracy: float | None = None
    source_accuracy: float | None = None
    accuracy_vs_source: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    aligner: Aligner,
    X: Tensor,
    Y: Tensor,
    *,
    labels: Tensor | None = None,
    class_vectors: Tensor | None = None,
    source_accuracy: float | None = None,
    chunk_rows: int = 65536,
) -> AlignmentMetrics:
    """Score ``aligner`` on held-out pairs ``(X, Y)``; zero-shot figures need labels and class vectors."""
    X, Y = torch.as_tensor(X), torch.as_tensor(Y)
    _check_pairs(X, Y)
    if (labels is None) != (class_vectors is None):
        raise ValueError("labels and class_vectors go together: pass both for zero-shot accuracy, or neither")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.shape[0] != X.shape[0]:
            raise ValueError(
                f"labels must be 1-d with one entry per pair ({X.shape[0]}), got shape {tuple(labels.shape)}"
            )
    chunks = (
        (X[i : i + chunk_rows], Y[i : i + chunk_rows], None if labels is None else labels[i : i + chunk_rows])
        for i in range(0, X.shape[0], chunk_rows)
    )
    return evaluate_chunks(aligner, chunks, class_vectors=class_vectors, source_accuracy=source_accuracy)


def evaluate_chunks(
    aligner: Aligner,
    chunks: Iterable[tuple[Tensor, Tensor, Tensor | None]],
    *,
    class_vectors: Tensor | None = None,
    source_accuracy: float | None = None,
    progress: bool = False,
    total_rows: int | None = None,
) -> AlignmentMetrics:
    """``evaluate`` over ``(X, Y, labels)`` chunks, streamed: the pairs never need to fit in memory.

    ``labels`` may be None in every chunk, or a tensor in every chunk (then ``class_vectors`` is
    required); zero-shot predictions are counted chunk by chunk.
    """
    from t2c_monitor.scoring import zero_shot_predict

    if source_accuracy is not None and not 0.0 <= source_accuracy <= 1.0:
        raise ValueError(f"source_accuracy must be a fraction in [0, 1], got {source_accuracy}")
    if class_vectors is not None:
        class_vectors = torch.as_tensor(class_vectors)
        if class_vectors.ndim != 2 or class_vectors.shape[1] != aligner.d_out:
            raise SpaceMismatchError(
                f"class_vectors have shape {tuple(class_vectors.shape)} but the aligner outputs {aligner.d_out}-d "
                f"vectors of CLIP model {describe(aligner.clip)}: encode the class texts with that CLIP model"
            )
    n = labelled = aligned_correct = clip_correct = 0
    sse = cos_sum = 0.0
    y_sum = torch.zeros(aligner.d_out, dtype=torch.float64)
    y_sq = torch.zeros(aligner.d_out, dtype=torch.float64)
    with progress_bar("evaluating the aligner", total_rows, progress) as advance:
        for X, Y, labels in chunks:
            X, Y = torch.as_tensor(X), torch.as_tensor(Y)
            _check_pairs(X, Y)
            if Y.shape[1] != aligner.d_out:
                raise SpaceMismatchError(
                    f"Y has width {Y.shape[1]} but the aligner outputs {aligner.d_out}-d vectors of CLIP model "
                    f"{describe(aligner.clip)}: embed with that CLIP model, or {REFIT_HINT}"
                )
            pred = aligner.transform(X.cpu())
            true = Y.to("cpu", torch.float32)
            sse += float(((pred.double() - true.double()) ** 2).sum())
            cos_sum += float(F.cosine_similarity(pred, true, dim=1).double().sum())
            y_sum += true.double().sum(dim=0)
            y_sq += (true.double() ** 2).sum(dim=0)
            n += X.shape[0]
            if labels is not None:
                if class_vectors is None:
                    raise ValueError("labels and class_vectors go together: pass class_vectors for zero-shot accuracy")
                labels = torch.as_tensor(labels).to(torch.long)
                if labels.ndim != 1 or labels.shape[0] != X.shape[0]:
                    raise ValueError(
                        f"labels must be 1-d with one entry per pair of the chunk ({X.shape[0]}), "
                        f"got shape {tuple(labels.shape)}"
                    )
                aligned_correct += int((zero_shot_predict(pred, class_vectors) == labels).sum())
                clip_correct += int((zero_shot_predict(true, class_vectors) == labels).sum())
                labelled += X.shape[0]
            advance(X.shape[0])
    if n < 2:
        raise ValueError(f"the pairs number {n}: R² needs at least 2")
    if labelled not in (0, n):
        raise ValueError(f"{labelled} of {n} pairs have labels: give labels for every chunk or for none")
    if class_vectors is not None and not labelled:
        raise ValueError("class_vectors without labels: pass the labels for zero-shot accuracy, or neither")
    sst = float((y_sq - y_sum**2 / n).sum())
    r2 = 1.0 - sse / sst if sst > 0 else float("nan")

    aligned_acc = clip_acc = retained = vs_source = None
    if labelled:
        aligned_acc, clip_acc = aligned_correct / n, clip_correct / n
        retained = aligned_acc / clip_acc if clip_acc > 0 else None
        if source_accuracy is not None and source_accuracy > 0:
            vs_source = aligned_acc / source_accuracy
    return AlignmentMetrics(
        n=n,
        r2=r2,
        cosine=cos_sum / n,
        aligned_accuracy=aligned_acc,
        clip_accuracy=clip_acc,
        retained_accuracy=retained,
        source_accuracy=source_accuracy,
        accuracy_vs_source=vs_source,
    )


# --------------------------------------------------------------------------------------------
# Paired feature files (what `t2c aligner fit --features` reads)


@dataclass
class PairedFeatures:
    """Paired source features ``X`` and CLIP embeddings ``Y`` from a ``.safetensors`` or ``.npz`` file.

    Optional entries: ``labels`` (n,) and ``class_vectors`` (k, d_out) for zero-shot metrics, and
    the ``source`` / ``clip`` identities (JSON in the safetensors header, or string arrays in npz).
    A ``.safetensors`` file is read lazily, slice by slice, so it may exceed memory.
    """

    path: Path
    n: int
    d_in: int
    d_out: int
    source: dict | None
    clip: dict | None
    _arrays: dict = field(repr=False, default_factory=dict)

    def rows(self, key: str, start: int, stop: int) -> Tensor:
        """Rows ``[start, stop)`` of entry ``X``, ``Y`` or ``labels`` as a tensor."""
        if self.path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as handle:
                return handle.get_slice(key)[start:stop]
        return torch.from_numpy(np.ascontiguousarray(self._arrays[key][start:stop]))

    def get(self, key: str) -> Tensor | None:
        """A whole optional entry (``labels``, ``class_vectors``), or None when the file has none."""
        if key not in self._keys():
            return None
        if self.path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as handle:
                return handle.get_tensor(key)
        return torch.from_numpy(np.ascontiguousarray(self._arrays[key]))

    def _keys(self) -> set[str]:
        if self.path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as handle:
                return set(handle.keys())
        return set(self._arrays)


def open_feature_file(path: str | Path) -> PairedFeatures:
    """Open a paired feature file, checking that it holds ``X`` (n, d_in) and ``Y`` (n, d_out)."""
    path = Path(path)
    if not path.is_file():
        raise T2CError(f"feature file {path} does not exist: pass a .safetensors or .npz file holding X and Y")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                keys = set(handle.keys())
                shapes = {k: handle.get_slice(k).get_shape() for k in keys}
                header = handle.metadata() or {}
        except (SafetensorError, OSError) as exc:
            raise T2CError(f"feature file {path} is not a readable safetensors file ({exc}): rewrite it") from exc
        arrays: dict = {}
        identities = {k: _parse_identity(header.get(k), path, k) for k in ("source", "clip")}
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError) as exc:
            raise T2CError(f"feature file {path} is not a readable .npz file ({exc}): rewrite it") from exc
        keys = set(arrays)
        shapes = {k: list(v.shape) for k, v in arrays.items()}
        identities = {
            k: _parse_identity(str(arrays.pop(k)) if k in arrays else None, path, k) for k in ("source", "clip")
        }
    else:
        raise T2CError(f"feature file {path} has suffix {path.suffix!r}: use .safetensors or .npz holding X and Y")
    missing = {"X", "Y"} - keys
    if missing:
        raise T2CError(f"feature file {path} lacks {sorted(missing)}: it must hold X (n, d_in) and Y (n, d_out)")
    sx, sy = shapes["X"], shapes["Y"]
    if len(sx) != 2 or len(sy) != 2 or sx[0] != sy[0]:
        raise T2CError(f"feature file {path}: X {sx} and Y {sy} must be 2-d with the same number of rows")
    if "labels" in keys and list(shapes["labels"]) != [sx[0]]:
        raise T2CError(f"feature file {path}: labels {shapes['labels']} must have one entry per row ({sx[0]})")
    return PairedFeatures(path, sx[0], sx[1], sy[1], identities["source"], identities["clip"], arrays)


def save_feature_file(
    path: str | Path,
    X: Tensor,
    Y: Tensor,
    *,
    labels: Tensor | None = None,
    class_vectors: Tensor | None = None,
    source: dict | None = None,
    clip: dict | None = None,
) -> None:
    """Write paired features as ``.safetensors`` (identities as JSON in the header) or ``.npz``."""
    with FeatureFileWriter(path) as writer:
        writer.append(X, Y, labels)
        writer.finish(class_vectors=class_vectors, source=source, clip=clip)


class FeatureFileWriter:
    """Paired features written chunk by chunk, so embedding a large image folder never holds them all.

    ``append`` rows, then ``finish`` with the optional class vectors and model identities; the file
    appears whole at ``path`` only then (written beside it and renamed), and leaving the ``with``
    block without ``finish`` leaves nothing behind. For ``.safetensors`` the rows go to raw
    scratch files beside ``path`` and are copied into place behind the header, which needs every
    tensor's size; for ``.npz`` they are kept in memory (numpy's format has no streamed writer).
    """

    _DTYPES = {"X": torch.float32, "Y": torch.float32, "labels": torch.int64}

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix not in (".safetensors", ".npz"):
            raise ValueError(f"path must end in .safetensors or .npz, got {str(self.path)!r}")
        self.n = 0
        self._widths: tuple[int, int] | None = None
        self._labelled: bool | None = None
        self._parts: dict[str, list[np.ndarray]] = {key: [] for key in self._DTYPES}
        self._scratch: dict[str, Any] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> FeatureFileWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close_scratch()

    def append(self, X: Tensor, Y: Tensor, labels: Tensor | None = None) -> None:
        """Add rows: ``X`` (n, d_in), ``Y`` (n, d_out) and, in every chunk or in none, ``labels`` (n,)."""
        X, Y = torch.as_tensor(X), torch.as_tensor(Y)
        _check_pairs(X, Y)
        widths = (X.shape[1], Y.shape[1])
        if self._widths is not None and widths != self._widths:
            raise ValueError(
                f"chunk widths changed from {self._widths} to {widths}: every chunk must hold the same models"
            )
        if self._labelled is not None and self._labelled != (labels is not None):
            raise ValueError("labels must come with every chunk or with none")
        arrays = {"X": X, "Y": Y}
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (X.shape[0],):
                raise ValueError(f"labels must be 1-d with one entry per row ({X.shape[0]}), got {tuple(labels.shape)}")
            arrays["labels"] = labels
        self._widths, self._labelled = widths, labels is not None
        for key, tensor in arrays.items():
            array = tensor.detach().cpu().to(self._DTYPES[key]).contiguous().numpy()
            if self.path.suffix == ".npz":
                self._parts[key].append(array)
            else:
                if key not in self._scratch:  # closed, and so deleted, by _close_scratch
                    prefix = f".{self.path.name}.{key}."
                    self._scratch[key] = tempfile.TemporaryFile(dir=self.path.parent, prefix=prefix)  # noqa: SIM115
                self._scratch[key].write(array.tobytes())
        self.n += X.shape[0]

    def finish(
        self, *, class_vectors: Tensor | None = None, source: dict | None = None, clip: dict | None = None
    ) -> None:
        """Write the file: every row appended so far, ``class_vectors`` (k, d_out) and the identities."""
        if self._widths is None:
            raise ValueError(f"no rows were appended to {self.path}: a feature file needs at least one pair")
        identities = {
            k: json.dumps(v, sort_keys=True) for k, v in (("source", source), ("clip", clip)) if v is not None
        }
        extra = None if class_vectors is None else torch.as_tensor(class_vectors).to(torch.float32).contiguous().numpy()
        partial = self.path.with_name(f".{self.path.name}.partial")
        if self.path.suffix == ".npz":
            arrays = {key: np.concatenate(parts) for key, parts in self._parts.items() if parts}
            if extra is not None:
                arrays["class_vectors"] = extra
            with open(partial, "wb") as handle:
                np.savez(handle, **arrays, **{k: np.array(v) for k, v in identities.items()})
        else:
            self._write_safetensors(partial, extra, identities)
        os.replace(partial, self.path)

    def _write_safetensors(self, target: Path, class_vectors: np.ndarray | None, metadata: dict[str, str]) -> None:
        d_in, d_out = self._widths
        # int64 labels first, so every tensor starts aligned to its element size (the data starts 8-aligned)
        entries = [("labels", "I64", [self.n])] if self._labelled else []
        entries += [("X", "F32", [self.n, d_in]), ("Y", "F32", [self.n, d_out])]
        if class_vectors is not None:
            entries.append(("class_vectors", "F32", list(class_vectors.shape)))
        header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
        offset = 0
        for key, dtype, shape in entries:
            size = math.prod(shape) * (8 if dtype == "I64" else 4)
            header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        with open(target, "wb") as out:
            out.write(len(encoded).to_bytes(8, "little"))
            out.write(encoded)
            for key, _, _ in entries:
                if key == "class_vectors":
                    out.write(class_vectors.tobytes())
                    continue
                scratch = self._scratch[key]
                scratch.seek(0)
                shutil.copyfileobj(scratch, out, length=16 << 20)

    def _close_scratch(self) -> None:
        for handle in self._scratch.values():
            handle.close()  # a TemporaryFile is deleted when closed
        self._scratch = {}
        self.path.with_name(f".{self.path.name}.partial").unlink(missing_ok=True)


def _parse_identity(raw: str | None, path: Path, key: str) -> dict | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise T2CError(f"feature file {path}: '{key}' identity is not valid JSON ({exc}): rewrite the file") from exc
    if not isinstance(value, dict):
        raise T2CError(f"feature file {path}: '{key}' identity must be a JSON object, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------------------------
# Small helpers
