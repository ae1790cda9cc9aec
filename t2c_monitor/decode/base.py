"""What every decoder shares: the decoded result, the decoder interface, and the checks on input vectors.

A decoder turns unit vectors of one CLIP space (image embeddings, aligned source embeddings,
class-head rows, drift directions) into ranked texts. It refuses vectors of another space, and it
holds no state that one call leaves for the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from t2c_monitor.errors import SpaceMismatchError
from t2c_monitor.identity import ModelIdentity, describe, same_space


@dataclass(frozen=True)
class Decoded:
    """One vector in words: ranked ``(text, score)`` pairs, best first. What the score means depends on
    the decoder (cosine for nearest terms, weight for a sparse mix, log-probability for sentences)."""

    texts: list[tuple[str, float]]

    def words(self, top: int | None = None) -> list[str]:
        return [t for t, _ in self.texts[:top]]

    @property
    def text(self) -> str:
        """The best text ('' when nothing was decoded)."""
        return self.texts[0][0] if self.texts else ""


@runtime_checkable
class Decoder(Protocol):
    """Decodes vectors of the CLIP space ``clip`` into texts."""

    name: str

    @property
    def clip(self) -> ModelIdentity: ...

    def decode(self, vectors: Tensor | np.ndarray, *, space: ModelIdentity | dict | None) -> list[Decoded]: ...

    def with_image_mean(self, image_mean: Tensor | np.ndarray | None) -> Decoder:
        """The same decoder (sharing its models) centring image vectors on another image-side mean."""
        ...


def check_space(clip: ModelIdentity, space: ModelIdentity | dict | None, *, built: str) -> None:
    """Refuse vectors whose space is not ``clip`` (or is unrecorded); ``built`` says what was built for
    ``clip`` (e.g. "this vocabulary was embedded by")."""
    if not same_space(clip, space):
        raise SpaceMismatchError(
            f"The vectors to decode live in the space of {describe(space)}, but {built} {describe(clip)}: decode "
            "with a decoder of that CLIP model (the one the monitor's aligner maps into)."
        )


def as_rows(vectors: Tensor | np.ndarray, dim: int) -> Tensor:
    """``vectors`` as a float32 CPU tensor ``(n, dim)`` (one vector becomes one row); shape and finiteness checked."""
    rows = vectors if isinstance(vectors, Tensor) else torch.from_numpy(np.asarray(vectors, dtype=np.float32))
    rows = rows.detach().float().cpu()
    if rows.ndim == 1:
        rows = rows[None]
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise ValueError(f"vectors must be (n, {dim}), got {tuple(rows.shape)}")
    if not torch.isfinite(rows).all():
        raise ValueError("vectors must be finite")
    return rows
