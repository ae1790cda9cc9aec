"""A concept bottleneck model (the paper's Section 5.1, Appendix G): a sparse linear head on concept similarities.

An image's aligned vector (the source encoder's features through the aligner, unit length) is
compared with every concept vector of a bank (cosine similarity); each similarity is standardised
by its mean and standard deviation over the training images, and a sparse linear layer maps the
standardised similarities ``z`` to class logits: ``logits = z @ W.T + b``. Because the input is
concepts, every logit splits into per-concept contributions ``W[c, k] * z[k]``: the explanation.

The model keeps its concept vectors, so it does not depend on the monitor's bank changing later,
and the identities of the spaces it was fitted in (source encoder, CLIP model, and the aligner's
weights): applied to vectors of another space it would be silently wrong, so loading refuses that
with how to fix it. Saved like the aligner (``artifacts.ArtifactFormat``: safetensors + JSON,
checksummed). The linear probe fitted beside it (on the raw source features) is saved with it, so
``t2c cbm eval`` can show both on new data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from t2c_monitor.artifacts import ArtifactFormat
from t2c_monitor.errors import SpaceMismatchError
from t2c_monitor.identity import ModelIdentity, as_dict, as_identity, describe, same_space

REFIT_HINT = "fit a concept bottleneck model for this monitor with `t2c cbm fit`"
CBM_FORMAT = ArtifactFormat(label="concept bottleneck model", marker="t2c-cbm", version=1, metadata_file="cbm.json",
                            tensors_file="cbm.safetensors", checksum_key="tensors_sha256",
                            written_by="`t2c cbm fit --out`", hint=REFIT_HINT)
TENSORS = ("weight", "bias", "concept_vectors", "sim_mean", "sim_std", "probe_weight", "probe_bias", "probe_mean",
           "probe_std")


def aligner_fingerprint(aligner: Any) -> str:
    """The sha256 of an aligner's weights: which affine map produced the aligned vectors."""
    digest = hashlib.sha256()
    for tensor in (aligner.W, aligner.b):
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class LinearProbe:
    """Multinomial logistic regression on standardised raw source features (the baseline a CBM is held to)."""

    weight: Tensor  # (C, d_in)
    bias: Tensor  # (C,)
    mean: Tensor  # (d_in,)
    std: Tensor  # (d_in,)

    def logits(self, features: Tensor) -> Tensor:
        return ((features.float() - self.mean) / self.std) @ self.weight.T + self.bias


@dataclass
class ConceptBottleneck:
    """Classes predicted from standardised concept similarities by a sparse linear head."""

    classes: tuple[str, ...]
    concept_names: tuple[str, ...]
    weight: Tensor  # (C, K) on standardised similarities
    bias: Tensor  # (C,)
    concept_vectors: Tensor  # (K, d) unit vectors in CLIP space
    sim_mean: Tensor  # (K,)
    sim_std: Tensor  # (K,)
    source: ModelIdentity
    clip: ModelIdentity
    aligner_sha256: str
    bank: dict[str, Any]  # name, version of the bank the concepts came from
    label_key: str = "label"
    probe: LinearProbe | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.source, self.clip = as_identity(self.source), as_identity(self.clip)
        c, k = len(self.classes), len(self.concept_names)
        if tuple(self.weight.shape) != (c, k) or tuple(self.bias.shape) != (c,):
            raise ValueError(f"weight must be ({c}, {k}) and bias ({c},); got {tuple(self.weight.shape)}, "
                             f"{tuple(self.bias.shape)}")
        if self.concept_vectors.shape[0] != k:
            raise ValueError(f"concept_vectors must hold {k} rows, got {self.concept_vectors.shape[0]}")

    @property
    def dim(self) -> int:
        return int(self.concept_vectors.shape[1])

    def standardised(self, aligned: Tensor) -> Tensor:
        """``z``: each concept's cosine similarity in training standard deviations from its training mean."""
        if aligned.ndim != 2 or aligned.shape[1] != self.dim:
            raise SpaceMismatchError(f"aligned vectors must be (n, {self.dim}) for this model; got "
                                     f"{tuple(aligned.shape)}: {REFIT_HINT}.")
        sims = F.normalize(aligned.float(), dim=1) @ self.concept_vectors.T
        return (sims - self.sim_mean) / self.sim_std

    def logits(self, aligned: Tensor) -> Tensor:
        return self.standardised(aligned) @ self.weight.T + self.bias

    def predict(self, aligned: Tensor) -> Tensor:
        return self.logits(aligned).argmax(dim=1)

    def contributions(self, aligned: Tensor) -> Tensor:
        """``(n, C, K)``: concept k's part in class c's logit for each image."""
        return self.standardised(aligned)[:, None, :] * self.weight[None]

    def concepts_used(self) -> dict[str, list[str]]:
        """Per class, the concepts with a nonzero weight (the bottleneck's sparsity)."""
        return {c: [self.concept_names[k] for k in torch.nonzero(self.weight[i]).flatten().tolist()]
                for i, c in enumerate(self.classes)}

    def check_space(self, *, source: ModelIdentity | None, clip: ModelIdentity | None, aligner: Any | None,
                    where: str = "") -> None:
        """Refuse use with another encoder, CLIP model or aligner than the model was fitted with."""
        name = f"concept bottleneck model {where}".strip()
        for role, stored, used in (("source encoder", self.source, source), ("CLIP model", self.clip, clip)):
            if used is not None and not same_space(stored, used):
                raise SpaceMismatchError(f"{name} was fitted for {role} {describe(stored)}, but the {role} in use is "
                                         f"{describe(used)}: {REFIT_HINT}.")
        if aligner is not None and aligner_fingerprint(aligner) != self.aligner_sha256:
            raise SpaceMismatchError(f"{name} was fitted on vectors of another aligner (weights "
                                     f"{self.aligner_sha256[:12]}, in use {aligner_fingerprint(aligner)[:12]}): "
                                     f"{REFIT_HINT}.")

    def save(self, path: str | Path) -> Path:
        probe = self.probe
        tensors = {"weight": self.weight, "bias": self.bias, "concept_vectors": self.concept_vectors,
                   "sim_mean": self.sim_mean, "sim_std": self.sim_std}
        if probe is not None:
            tensors |= {"probe_weight": probe.weight, "probe_bias": probe.bias, "probe_mean": probe.mean,
                        "probe_std": probe.std}
        return CBM_FORMAT.write(path, tensors, {
            "classes": list(self.classes), "concept_names": list(self.concept_names), "source": as_dict(self.source),
            "clip": as_dict(self.clip), "aligner_sha256": self.aligner_sha256, "bank": self.bank,
            "label_key": self.label_key, "metrics": self.metrics, "has_probe": probe is not None,
        })

    @classmethod
    def load(cls, path: str | Path, *, expect_source: ModelIdentity | None = None,
             expect_clip: ModelIdentity | None = None, expect_aligner: Any | None = None) -> ConceptBottleneck:
        """Read a model saved by ``save``, refused when fitted in other spaces than those expected."""
        from t2c_monitor.errors import ModelLoadError

        directory = Path(path)
        meta, tensors = CBM_FORMAT.read(directory, TENSORS[:5], optional=TENSORS[5:])
        try:
            probe = LinearProbe(tensors["probe_weight"], tensors["probe_bias"], tensors["probe_mean"],
                                tensors["probe_std"]) if meta.get("has_probe") else None
            model = cls(classes=tuple(meta["classes"]), concept_names=tuple(meta["concept_names"]),
                        weight=tensors["weight"], bias=tensors["bias"], concept_vectors=tensors["concept_vectors"],
                        sim_mean=tensors["sim_mean"], sim_std=tensors["sim_std"], source=meta["source"],
                        clip=meta["clip"], aligner_sha256=meta["aligner_sha256"], bank=meta.get("bank") or {},
                        label_key=meta.get("label_key", "label"), probe=probe, metrics=meta.get("metrics") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"concept bottleneck model {directory} is incomplete or inconsistent ({exc!r}): "
                                 f"{REFIT_HINT}.") from exc
        model.check_space(source=expect_source, clip=expect_clip, aligner=expect_aligner, where=str(directory))
        return model
