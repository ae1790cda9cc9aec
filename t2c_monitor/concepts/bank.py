"""Encoded concept banks: unit vectors in one CLIP space, with what they were made from, saved and loaded.

A ``ConceptBank`` holds one unit vector per concept (``(k, d)`` float32), the names, phrasings,
templates and classes they were encoded from (``definition.py``), and the identity of the CLIP
model that encoded them. Vectors of two CLIP models live in different spaces, so a bank records
that identity, and ``check_same_space`` refuses to compare its vectors with vectors of another
CLIP space (or of an unrecorded one) rather than return scores that mean nothing.

On disk a bank is a directory in the shared artifact format (``t2c_monitor.artifacts``,
``BANK_FORMAT``): ``bank.json`` (the metadata: name, version, CLIP identity, templates, classes,
concepts with their phrasings) and ``vectors.safetensors``, checked by sha256 when read.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from t2c_monitor.artifacts import ArtifactFormat
from t2c_monitor.concepts.definition import normalise_key
from t2c_monitor.errors import ConfigError, ModelLoadError, SpaceMismatchError
from t2c_monitor.identity import ModelIdentity, as_dict, as_identity, describe, same_space

VECTORS_FILE = "vectors.safetensors"
METADATA_FILE = "bank.json"
FORMAT = "t2c-concept-bank"
FORMAT_VERSION = 1
REQUIRED_METADATA = ("name", "version", "clip", "templates", "concepts")
REENCODE_HINT = "re-encode the bank with `t2c concepts encode BANKFILE --clip SPEC --out DIR`"
BANK_FORMAT = ArtifactFormat(label="concept bank", marker=FORMAT, version=FORMAT_VERSION, metadata_file=METADATA_FILE,
                             tensors_file=VECTORS_FILE, checksum_key="vectors_sha256",
                             written_by="`t2c concepts encode --out`", hint=REENCODE_HINT)


def _describe(identity: dict | None) -> str:
    return describe(identity, unrecorded="(unrecorded CLIP model)")


def check_same_space(
    bank_clip: ModelIdentity | dict | None, other_clip: ModelIdentity | dict | None, *, what: str = "aligned vectors"
) -> None:
    """Refuse to compare a bank's vectors with ``what`` from another CLIP space (or an unknown one).

    Both sides are ``ModelIdentity`` objects or their dicts; they must agree in kind, weights
    sha256 and dimension.
    """
    bank, other = as_dict(bank_clip), as_dict(other_clip)
    if not bank or not other:
        missing = "the bank" if not bank else what
        raise SpaceMismatchError(
            f"Cannot check that {what} and the concept bank share a CLIP space: {missing} records no CLIP model "
            f"(bank: {_describe(bank)}; {what}: {_describe(other)}). Re-create it with its CLIP identity recorded."
        )
    if not same_space(bank, other):
        raise SpaceMismatchError(
            f"The concept bank was encoded with {_describe(bank)}, but the {what} live in the space of "
            f"{_describe(other)}: re-encode the bank with that CLIP model (`t2c concepts encode ... --clip SPEC`) "
            "or use an aligner fitted to the bank's CLIP model."
        )


@dataclass
class ConceptBank:
    """Encoded concepts: unit vectors ``(k, d)`` float32 in the space of the CLIP model ``clip``."""

    name: str
    version: int
    clip: ModelIdentity  # a dict (JSON metadata) is accepted and converted
    templates: tuple[str, ...]
    concept_names: tuple[str, ...]
    phrasings: tuple[tuple[str, ...], ...]
    vectors: Tensor
    classes: tuple[str, ...] = ()
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def __post_init__(self) -> None:
        self.clip = as_identity(self.clip)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.concept_names):
            raise ValueError(f"vectors must be ({len(self.concept_names)}, d), got {tuple(self.vectors.shape)}")
        if len(self.phrasings) != len(self.concept_names):
            raise ValueError("phrasings must hold one tuple per concept name")
        self.vectors = self.vectors.detach().to("cpu", torch.float32).contiguous()

    @property
    def k(self) -> int:
        return len(self.concept_names)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def index(self, concept: str) -> int:
        """Row of ``concept`` (matched ignoring case and extra spaces)."""
        keys = [normalise_key(n) for n in self.concept_names]
        try:
            return keys.index(normalise_key(concept))
        except ValueError:
            raise ConfigError(
                f"Concept {concept!r} is not in bank {self.name} v{self.version}; "
                f"it has: {', '.join(self.concept_names)}."
            ) from None

    def without(self, *concepts: str) -> ConceptBank:
        """The same bank without ``concepts`` (each must be in it), as a new version."""
        drop = {self.index(c) for c in concepts}
        keep = [i for i in range(self.k) if i not in drop]
        return dataclasses.replace(self, version=self.version + 1,
                                   concept_names=tuple(self.concept_names[i] for i in keep),
                                   phrasings=tuple(self.phrasings[i] for i in keep), vectors=self.vectors[keep])

    def check_space(self, clip: ModelIdentity | dict | None, *, what: str = "aligned vectors") -> None:
        """Raise ``SpaceMismatchError`` unless ``clip`` is the CLIP model this bank was encoded with."""
        check_same_space(self.clip, clip, what=what)

    def to_metadata(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "clip": as_dict(self.clip),
            "templates": list(self.templates),
            "classes": list(self.classes),
            "concepts": [
                {"name": n, "phrasings": list(p)} for n, p in zip(self.concept_names, self.phrasings, strict=True)
            ],
            "k": self.k,
            "dim": self.dim,
            "created_at": self.created_at,
        }

    def save(self, path: str | Path) -> Path:
        """Write the bank to directory ``path``: ``vectors.safetensors`` and ``bank.json``."""
        meta = {k: v for k, v in self.to_metadata().items() if k not in ("format", "format_version")}
        return BANK_FORMAT.write(path, {"vectors": self.vectors}, meta)

    @classmethod
    def _from_metadata(cls, meta: dict, vectors: Tensor, directory: Path) -> ConceptBank:
        """The bank that ``meta`` (bank.json) and ``vectors`` describe, or ``ModelLoadError`` saying what is wrong."""
        meta_path = directory / METADATA_FILE
        missing = [key for key in REQUIRED_METADATA if key not in meta]
        if missing:
            raise ModelLoadError(f"Concept bank metadata {meta_path} lacks {missing}: {REENCODE_HINT}.")
        try:
            concepts = meta["concepts"]
            bank = cls(
                name=str(meta["name"]),
                version=int(meta["version"]),
                clip=meta["clip"],
                templates=tuple(meta["templates"]),
                concept_names=tuple(c["name"] for c in concepts),
                phrasings=tuple(tuple(c["phrasings"]) for c in concepts),
                vectors=vectors,
                classes=tuple(meta.get("classes") or ()),
                created_at=meta.get("created_at", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(
                f"Concept bank {directory} is incomplete or inconsistent ({type(exc).__name__}: {exc}): "
                f"{REENCODE_HINT}."
            ) from exc
        clip_dim = bank.clip.dim if bank.clip is not None else None
        for what, expected in (("the bank's CLIP model", clip_dim), ("'dim'", meta.get("dim"))):
            if expected is not None and expected != bank.dim:
                raise ModelLoadError(
                    f"Concept vectors in {directory / VECTORS_FILE} are {bank.dim} wide, but {meta_path} records "
                    f"{expected} for {what}: {REENCODE_HINT}."
                )
        return bank

    @classmethod
    def load(cls, path: str | Path, *, expect_clip: ModelIdentity | dict | None = None) -> ConceptBank:
        """Read a bank written by ``save``; with ``expect_clip``, refuse a bank of another CLIP space."""
        directory = Path(path)
        meta, tensors = BANK_FORMAT.read(directory, ("vectors",))
        bank = cls._from_metadata(meta, tensors["vectors"], directory)
        if expect_clip is not None:
            bank.check_space(expect_clip, what="CLIP model in use")
        return bank
