"""The aligner object: a fitted affine map from a source encoder's feature space into CLIP image space.

``z -> z @ W + b`` with ``W`` stored as ``(d_in, d_out)`` (the paper writes ``W^T z + b``).
``Aligner.save`` / ``Aligner.load`` keep it (through the shared ``ALIGNER_FORMAT``) with the
identities of the two models whose spaces it joins, so an aligner is never applied to features of
another encoder or compared with text vectors of another CLIP model. Identities are
``ModelIdentity`` objects (dicts read from JSON metadata are converted); they come from
``t2c_monitor.identity``, so this module does not import the model libraries. Also here:
``element_variance``, the one pooled statistic an aligner keeps of its training features (and the
SGD recipe scales by). The solvers that make an ``Aligner`` live in ``exact`` and ``sgd``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from t2c_monitor.artifacts import ArtifactFormat
from t2c_monitor.errors import ModelLoadError, SpaceMismatchError
from t2c_monitor.identity import ModelIdentity, as_dict, as_identity, describe, same_space

WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "aligner.json"
FORMAT = "t2c-aligner"
FORMAT_VERSION = 1
FitMethod = Literal["exact", "sgd"]  # how an aligner was fitted
REFIT_HINT = "refit the aligner for this encoder/CLIP pair with `t2c aligner fit`"
ALIGNER_FORMAT = ArtifactFormat(label="aligner", marker=FORMAT, version=FORMAT_VERSION, metadata_file=METADATA_FILE,
                                tensors_file=WEIGHTS_FILE, checksum_key="weights_sha256",
                                written_by="`t2c aligner fit --out`", hint=REFIT_HINT)


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
    method: FitMethod
    source: ModelIdentity | None = None  # a dict (JSON metadata) is accepted and converted
    clip: ModelIdentity | None = None
    metrics: dict = field(default_factory=dict)
    fit_info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.source, self.clip = as_identity(self.source), as_identity(self.clip)
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
            "d_in": self.d_in, "d_out": self.d_out, "method": self.method, "source": as_dict(self.source),
            "clip": as_dict(self.clip), "feature_variance": self.feature_variance, "n_train": self.n_train,
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

        ``expect_source`` / ``expect_clip`` are the ``ModelIdentity`` (or its dict) of the encoder and CLIP
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

    def check_models(self, *, source: ModelIdentity | dict | None = None, clip: ModelIdentity | dict | None = None,
                     where: str = "") -> None:
        """Refuse use with another source encoder or CLIP model than the aligner was fitted for.

        ``source`` / ``clip`` are the ``ModelIdentity`` (or its dict) of the models in use (None: not
        checked); they must match the recorded ones in kind, weights_sha256 and dim. The message
        names both models. ``where`` names the aligner (its directory) in that message.
        """
        _check_identity("source encoder", self.source, source, self.d_in, where)
        _check_identity("CLIP model", self.clip, clip, self.d_out, where)


def _check_identity(role: str, stored: ModelIdentity | None, expected: ModelIdentity | dict | None, width: int,
                    where: str) -> None:
    """Refuse an aligner whose recorded model differs from the one the caller will use."""
    if expected is None:
        return
    name = f"aligner {where}" if where else "the aligner"
    if stored is None:
        raise SpaceMismatchError(
            f"{name} records no {role} identity, so it cannot be checked against "
            f"{describe(expected)}: {REFIT_HINT} (it records both identities)"
        )
    if not same_space(stored, expected) or as_dict(expected).get("dim") != width:
        raise SpaceMismatchError(
            f"{name} was fitted for {role} {describe(stored)}, but the {role} in use is "
            f"{describe(expected)}: {REFIT_HINT}"
        )


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
