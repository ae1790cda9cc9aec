"""The ``vocab`` decoder: a vector of the aligned space named by the vocabulary terms nearest to it,
or decomposed into a few of them.

Both modes compare *centred* vectors, as SpLiCE does: CLIP's image and text embeddings sit in two
cones around different means (the modality gap), and the terms of a vocabulary share a large
common component. The text side is centred by projecting every term off the vocabulary's mean
direction; a vector to decode is first moved by the image side's mean when the caller gives one
(e.g. a baseline's mean aligned vector) and projected off the same direction. The projection
(rather than a subtraction) makes the result independent of scale: the normalised sum of two term
vectors decomposes exactly into those two terms.

``nearest``: the terms of highest centred cosine with the vector (milliseconds for 30,000 terms).

``sparse``: a non-negative mix of a few terms that rebuilds the centred vector, so a vector that
mixes two concepts is named by both. The mix is found greedily: among the terms most similar to
the vector, add the one most correlated with what is not yet explained, refit every weight by
non-negative least squares, and stop after ``max_terms`` or when nothing left correlates.

A signed direction (a difference of means: what the window has more and less of than the
baseline) is decomposed twice: the direction for what grew, its negation for what shrank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from t2c_monitor.decode.base import Decoded, as_rows
from t2c_monitor.decode.vocabulary import Vocabulary
from t2c_monitor.identity import ModelIdentity

VocabMode = Literal["nearest", "sparse"]


@dataclass(frozen=True)
class DecodedDirection:
    """A signed direction in words: what grew and what shrank."""

    grew: Decoded
    shrank: Decoded = field(default_factory=lambda: Decoded([]))


class VocabDecoder:
    """Decode unit vectors of one CLIP space with a ``Vocabulary`` of that space (scores: cosine for
    ``nearest``, weight for ``sparse``)."""

    name = "vocab"

    def __init__(self, vocabulary: Vocabulary, *, mode: VocabMode = "nearest", top: int = 5, max_terms: int = 5,
                 candidates: int = 256, image_mean: Tensor | np.ndarray | None = None) -> None:
        if mode not in ("nearest", "sparse"):
            raise ValueError(f"mode must be 'nearest' or 'sparse', got {mode!r}")
        for name, value in (("top", top), ("max_terms", max_terms), ("candidates", candidates)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.vocabulary, self.mode, self.top = vocabulary, mode, top
        self.max_terms, self.candidates = max_terms, min(candidates, len(vocabulary.terms))
        self._axis = F.normalize(vocabulary.vectors.mean(dim=0), dim=0)
        self._centred = F.normalize(self._off_axis(vocabulary.vectors), dim=1)
        self._image_mean = None if image_mean is None else torch.as_tensor(image_mean, dtype=torch.float32)
        if self._image_mean is not None and self._image_mean.shape != (vocabulary.dim,):
            raise ValueError(f"image_mean must have shape ({vocabulary.dim},), got {tuple(self._image_mean.shape)}")

    @property
    def clip(self) -> ModelIdentity:
        return self.vocabulary.clip

    def with_image_mean(self, image_mean: Tensor | np.ndarray | None) -> VocabDecoder:
        return VocabDecoder(self.vocabulary, mode=self.mode, top=self.top, max_terms=self.max_terms,
                            candidates=self.candidates, image_mean=image_mean)

    def decode(self, vectors: Tensor | np.ndarray, *, space: ModelIdentity | dict | None) -> list[Decoded]:
        """Each row of ``vectors`` (image-side vectors of the CLIP space ``space``) in words."""
        self.vocabulary.check_space(space)
        rows = F.normalize(self._rows(vectors), dim=1)
        if self._image_mean is not None:
            rows = rows - self._image_mean
        centred = F.normalize(self._off_axis(rows), dim=1)
        if self.mode == "nearest":
            return self._nearest(centred)
        return [self._sparse(v) for v in centred]

    def decode_direction(self, direction: Tensor | np.ndarray, *, space: ModelIdentity | dict | None
                         ) -> DecodedDirection:
        """What grew (the direction) and what shrank (its negation), each as a sparse mix of terms; a
        difference of image means needs no image centring, the text side is centred as always."""
        self.vocabulary.check_space(space)
        (d,) = self._rows(direction)
        if not torch.any(d):
            return DecodedDirection(Decoded([]), Decoded([]))
        grew, shrank = self._sparse_signed(F.normalize(self._off_axis(d[None])[0], dim=0))
        return DecodedDirection(grew=grew, shrank=shrank)

    def _rows(self, vectors: Tensor | np.ndarray) -> Tensor:
        return as_rows(vectors, self.vocabulary.dim)

    def _off_axis(self, rows: Tensor) -> Tensor:
        """``rows`` minus their component along the vocabulary's mean direction."""
        return rows - (rows @ self._axis)[:, None] * self._axis

    def _nearest(self, centred: Tensor) -> list[Decoded]:
        values, index = torch.topk(centred @ self._centred.T, min(self.top, len(self.vocabulary.terms)), dim=1)
        return [Decoded([(self.vocabulary.terms[i], float(s)) for s, i in zip(vs.tolist(), ix.tolist(), strict=True)])
                for vs, ix in zip(values, index, strict=True)]

    def _sparse(self, target: Tensor) -> Decoded:
        """A non-negative mix of the centred terms most similar to ``target``."""
        _, pool = torch.topk(self._centred @ target, self.candidates)
        weights = _pursuit(self._centred[pool].double().numpy(), target.double().numpy(), self.max_terms)
        return self._ranked(pool.tolist(), weights)

    def _sparse_signed(self, target: Tensor) -> tuple[Decoded, Decoded]:
        """A mix of terms with signs: each term may enter as itself (grew) or negated (shrank)."""
        _, pool = torch.topk((self._centred @ target).abs(), self.candidates)
        atoms = self._centred[pool].double().numpy()
        weights = _pursuit(np.concatenate([atoms, -atoms]), target.double().numpy(), self.max_terms)
        n = len(pool)
        return self._ranked(pool.tolist(), weights[:n]), self._ranked(pool.tolist(), weights[n:])

    def _ranked(self, pool: list[int], weights: np.ndarray) -> Decoded:
        order = [i for i in np.argsort(-weights) if weights[i] > 0][: self.top]
        return Decoded([(self.vocabulary.terms[pool[i]], float(weights[i])) for i in order])


def _pursuit(atoms: np.ndarray, goal: np.ndarray, max_terms: int) -> np.ndarray:
    """Non-negative weights of at most ``max_terms`` rows of ``atoms`` that rebuild ``goal``: add the
    atom most correlated with what is not explained yet, refit all weights by non-negative least
    squares, drop the ones it zeroes; stop when nothing left correlates."""
    from scipy.optimize import nnls

    weights = np.zeros(atoms.shape[0])
    chosen: list[int] = []
    residual = goal.copy()
    for _ in range(max_terms):
        correlation = atoms @ residual
        correlation[chosen] = -np.inf
        best = int(np.argmax(correlation))
        if correlation[best] <= 1e-6:
            break
        chosen.append(best)
        fitted, _ = nnls(atoms[chosen].T, goal)
        chosen = [c for c, w in zip(chosen, fitted, strict=True) if w > 1e-9]
        weights[:] = 0.0
        weights[chosen] = fitted[fitted > 1e-9]
        residual = goal - atoms[chosen].T @ weights[chosen]
    return weights
