"""One factory for decoders: ``create_decoder(kind, clip=..., ...)`` makes the ``vocab``, ``prefix`` or
``guided`` decoder of a CLIP space from plain settings (a monitor's ``decode:`` section, CLI flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from t2c_monitor.decode.base import Decoder
from t2c_monitor.errors import ConfigError, SpaceMismatchError
from t2c_monitor.identity import describe, same_space

DecoderKind = Literal["vocab", "prefix", "guided"]
DECODER_KINDS: tuple[str, ...] = ("vocab", "prefix", "guided")


@dataclass(frozen=True)
class DecoderSettings:
    """Everything a decoder of any kind may need; each kind reads its own fields."""

    kind: DecoderKind = "vocab"
    top: int = 5
    # vocab
    mode: Literal["nearest", "sparse"] = "nearest"
    terms: tuple[str, ...] = ()
    bpe_words: bool = True
    corpus: Path | None = None  # keep only the open_clip words this corpus uses
    cache_dir: Path | None = None
    # prefix
    prefix: Path | None = None
    # guided
    lm: str = "gpt2"
    guided: dict[str, Any] = field(default_factory=dict)  # GuidedSettings fields


def create_decoder(settings: DecoderSettings, *, clip: Any, image_mean: Tensor | np.ndarray | None = None,
                   bank: Any = None, device: str | torch.device | None = None, progress: bool = False) -> Decoder:
    """The decoder ``settings.kind`` for ``clip`` (an ``encoders.ClipModel``). ``image_mean`` is the mean
    unit image-side vector of the space when known (a baseline's): the decoders that bridge the
    modality gap by centring use it. A ``bank`` (``ConceptBank``) puts its concepts, as its own
    vectors, at the head of the vocabulary."""
    if settings.kind == "vocab":
        from t2c_monitor.decode.vocab import VocabDecoder
        from t2c_monitor.decode.vocabulary import build_vocabulary, corpus_words, vocabulary_of, with_concepts

        if bank is not None and not same_space(bank.clip, clip.identity):
            raise SpaceMismatchError(f"Concept bank {bank.name} was encoded by {describe(bank.clip)}, not by "
                                     f"{describe(clip.identity)}: encode it with this CLIP model.")
        if settings.terms or settings.bpe_words:
            known = corpus_words(settings.corpus) if settings.corpus is not None else None
            vocabulary = build_vocabulary(clip, settings.terms, include_bpe_words=settings.bpe_words,
                                          known_words=known, cache_dir=settings.cache_dir, progress=progress)
            if bank is not None:
                vocabulary = with_concepts(vocabulary, bank.concept_names, bank.vectors)
        elif bank is not None:
            vocabulary = vocabulary_of(bank.vectors, list(bank.concept_names), clip.identity)
        else:
            raise ConfigError("The vocab decoder has no terms: give words, a concept bank, or allow open_clip's words.")
        return VocabDecoder(vocabulary, mode=settings.mode, top=settings.top, image_mean=image_mean)
    if settings.kind == "prefix":
        from t2c_monitor.decode.prefix import PrefixDecoder

        if settings.prefix is None:
            raise ConfigError("The prefix decoder needs a trained decoder directory: train one with `t2c decoder "
                              "train --clip SPEC --lm SPEC --corpus FILE --out DIR` and set `decode.prefix: DIR`.")
        decoder = PrefixDecoder.load(settings.prefix, device=device)
        if not same_space(decoder.clip, clip.identity):
            raise SpaceMismatchError(f"The prefix decoder {settings.prefix} was trained for {describe(decoder.clip)}, "
                                     f"not for {describe(clip.identity)}: train one for this CLIP model with "
                                     "`t2c decoder train`.")
        return decoder.with_options(image_mean=image_mean, beam_size=max(settings.top, 1))
    if settings.kind == "guided":
        from t2c_monitor.decode.guided import GuidedDecoder, GuidedSettings
        from t2c_monitor.decode.lm import load_causal_lm

        try:
            guided = GuidedSettings(**{"beam_size": settings.top, **settings.guided})
        except TypeError as exc:
            raise ConfigError(f"Unknown guided decoder setting: {exc}") from exc
        return GuidedDecoder(load_causal_lm(settings.lm, device=device), clip, guided, image_mean=image_mean)
    raise ConfigError(f"Unknown decoder {settings.kind!r}: choose one of {', '.join(DECODER_KINDS)}.")
