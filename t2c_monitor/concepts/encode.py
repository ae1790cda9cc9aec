"""Encoding a bank definition with a CLIP model's text tower into a ``ConceptBank``.

Each concept vector is the normalised mean over all its prompts -- every phrasing in every
template (and, for class-conditioned banks, ``template.format(f"{class} {phrasing}")`` for every
class) -- of the prompts' *normalised* text embeddings, as open_clip's zero-shot classifier does:
normalising first keeps a prompt whose embedding happens to be long from outweighing the others.

Prompts are streamed to the text tower in batches that run across concepts, so a class-conditioned
bank (1000 classes x 80 templates per concept) never holds all its prompts or embeddings at once.
A prompt longer than the tokenizer's context length is cut by CLIP; ``encode_bank`` warns
(``ConceptTruncatedWarning``) naming the concept, so it can be shortened.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from t2c_monitor.concepts.bank import ConceptBank
from t2c_monitor.concepts.definition import BankDefinition, load_bank_definition
from t2c_monitor.progress import progress_bar

if TYPE_CHECKING:
    from t2c_monitor.encoders import ClipModel


class ConceptTruncatedWarning(UserWarning):
    """A concept's prompt has more tokens than the CLIP tokenizer's context length and was cut."""


def _warn_if_truncated(concept: str, prompts: Sequence[str], clip: ClipModel) -> None:
    """Warn once for ``concept`` if its longest prompt is cut at the tokenizer's context length."""
    limit = clip.context_length
    n, longest = max((clip.count_tokens(p), p) for p in prompts)
    if n > limit:
        warnings.warn(
            f"Concept {concept!r}: prompt {longest!r} has {n} tokens, more than the context length {limit} "
            f"of {clip.identity.name}; it is truncated. Shorten the concept text.",
            ConceptTruncatedWarning,
            stacklevel=5,  # the caller of encode_bank (via the prompt generator and the encoding loop)
        )


def _encode_prompt_groups(
    clip: ClipModel, groups: Iterable[Sequence[str]], k: int, *, batch_size: int, progress: bool
) -> Tensor:
    """One unit vector per group of ``k``: each prompt embedding normalised, averaged, the mean normalised.

    Prompts are streamed in batches of ``batch_size``: only one batch of prompts and embeddings is
    held at a time, plus a ``(k, d)`` sum of the normalised embeddings per group, so a bank of
    1000 classes x 80 templates per concept fits in memory; batches run across group boundaries,
    so small groups still fill the text encoder.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sums = torch.zeros((k, clip.dim), dtype=torch.float32)
    texts: list[str] = []
    owners: list[int] = []

    def flush() -> None:
        if texts:
            unit = F.normalize(clip.encode_text(texts, batch_size=batch_size).float(), dim=1)
            sums.index_add_(0, torch.tensor(owners, dtype=torch.long), unit)
            texts.clear()
            owners.clear()

    done = 0  # groups whose every prompt has been encoded
    with progress_bar(f"encoding concepts ({clip.identity.name})", k, progress) as advance:
        for i, prompts in enumerate(groups):
            for prompt in prompts:
                texts.append(prompt)
                owners.append(i)
                if len(texts) == batch_size:
                    flush()
                    advance(i - done)
                    done = i
            if not texts:
                advance(i + 1 - done)
                done = i + 1
        flush()
        advance(k - done)
    return F.normalize(sums, dim=1)


def encode_texts_as_concepts(
    clip: ClipModel, prompt_lists: Sequence[Sequence[str]], *, batch_size: int = 256, progress: bool = False
) -> Tensor:
    """Unit vectors ``(k, d)``, one per list of prompts, averaged the way banks are."""
    return _encode_prompt_groups(clip, prompt_lists, len(prompt_lists), batch_size=batch_size, progress=progress)


def encode_bank(
    definition: BankDefinition, clip: ClipModel, *, batch_size: int = 256, progress: bool = False
) -> ConceptBank:
    """Encode every concept of ``definition`` with ``clip``'s text tower into a ``ConceptBank``."""

    def prompts() -> Iterator[list[str]]:
        """One concept's prompts at a time (never all of them), each checked for truncation as it comes."""
        for concept in definition.concepts:
            texts = definition.prompts(concept)
            _warn_if_truncated(concept.name, texts, clip)
            yield texts

    k = len(definition.concepts)
    vectors = _encode_prompt_groups(clip, prompts(), k, batch_size=batch_size, progress=progress)
    return ConceptBank(
        name=definition.name,
        version=definition.version,
        clip=clip.identity,
        templates=definition.templates,
        concept_names=tuple(c.name for c in definition.concepts),
        phrasings=tuple(c.phrasings for c in definition.concepts),
        vectors=vectors,
        classes=definition.classes,
    )


def encode_bank_file(path: str | Path, clip_spec: str, *, out: str | Path | None = None, name: str | None = None,
                     version: int | None = None, templates: Sequence[str] | None = None,
                     classes: Sequence[str] | None = None, device: str | None = None, batch_size: int = 256,
                     progress: bool = False) -> ConceptBank:
    """The use case behind `t2c concepts encode`: read a bank file (``name``, ``version``,
    ``templates`` and ``classes`` override it), encode it with the CLIP model of ``clip_spec``,
    and save it to ``out`` when given."""
    from t2c_monitor.encoders import create_clip_model

    definition = load_bank_definition(path, name=name, version=version, templates=templates or None,
                                      classes=classes or None)
    bank = encode_bank(definition, create_clip_model(clip_spec, device=device), batch_size=batch_size,
                       progress=progress)
    if out is not None:
        bank.save(out)
    return bank
