"""Which model made a vector, and the one check that two vectors live in the same space.

Every stored artifact (aligner, concept bank, monitor record) names the models it belongs to by a
``ModelIdentity``: kind, name, weights reference, sha256 of the weights and output width. Two
identities share a space when kind, weights hash and width agree (the file or hub tag the weights
came from may differ). ``same_space`` is that rule, written once; each artifact words its own
refusal (what to refit or re-encode) around it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SPACE_KEYS = ("kind", "weights_sha256", "dim")


@dataclass(frozen=True)
class ModelIdentity:
    """Which model produced a vector: name, weights reference, hash of the weights, output width."""

    kind: str
    name: str
    weights: str | None
    weights_sha256: str
    dim: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelIdentity:
        missing = {"kind", "name", "weights", "weights_sha256", "dim"} - set(d)
        if missing:
            raise ValueError(f"d is not a ModelIdentity dict: missing {sorted(missing)}")
        return cls(d["kind"], d["name"], d["weights"], d["weights_sha256"], int(d["dim"]))

    def same_model(self, other: ModelIdentity) -> bool:
        """True when both identities name the same weights (the file or tag they came from may differ)."""
        return same_space(self, other)

    def __str__(self) -> str:
        weights = self.weights or "random init"
        return f"{self.kind}:{self.name} ({weights}, dim {self.dim}, sha256 {self.weights_sha256[:12]})"


def as_identity(identity: ModelIdentity | dict | None) -> ModelIdentity | None:
    """An identity as the typed object (a dict read from JSON metadata or the database converted), or None."""
    if identity is None or isinstance(identity, ModelIdentity):
        return identity
    return ModelIdentity.from_dict(identity)


def as_dict(identity: ModelIdentity | dict | None) -> dict | None:
    """An identity as its dict (what JSON metadata and the database hold), or None."""
    return identity.to_dict() if isinstance(identity, ModelIdentity) else identity


def same_space(a: ModelIdentity | dict | None, b: ModelIdentity | dict | None) -> bool:
    """Whether both identities are known and agree in kind, weights sha256 and width."""
    a, b = as_dict(a), as_dict(b)
    return bool(a) and bool(b) and all(a.get(k) == b.get(k) for k in SPACE_KEYS)


def describe(identity: ModelIdentity | dict | None, *, unrecorded: str = "(unrecorded)") -> str:
    """An identity in words for messages: kind, name, weights, hash prefix and width."""
    d: dict[str, Any] | None = as_dict(identity)
    if not d:
        return unrecorded
    return (f"{d.get('kind')}:{d.get('name')} (weights {d.get('weights')}, "
            f"sha256 {str(d.get('weights_sha256', ''))[:12]}, dim {d.get('dim')})")
