"""Does concept-to-text say the right thing in the shapes world?

``decode_semantics`` measures, against the world's ground truth:
- **class vectors**: each row of the shape-only source model's classifier, rescaled (Appendix I)
  and aligned into CLIP space, decoded by each decoder: is the right shape named (``vocab``: in
  its top 3 terms; sentence decoders: in the best sentence)?
- **factor naming**: for held-out images, the text decoded from the *aligned source embedding* and
  from *CLIP's own image embedding*: how often each names the image's true colour, size and
  background (and shape). A sentence names a value when it uses one of the value's words and no
  word of another value of the same factor (a list of every colour names none); ranked terms name
  the value that the first term naming any value of the factor names.
- **mixtures**: the normalised sum of two bank concept vectors of different factors, decomposed by
  ``vocab`` (sparse): are both concepts among its terms?
Tests run it small on the quick world; ``bench/decode.py`` runs it on the full one.
"""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from t2c_monitor.world.captions import BACKGROUND_PHRASES, COLOR_WORDS, EFFECT_PHRASES, SHAPE_WORDS, SIZE_WORDS

NAMED_FACTORS = ("color", "size", "background", "shape")
# function words, and words the captions use for several values or for none in particular
_STOP = frozenset({"a", "an", "the", "on", "in", "of", "against", "front", "plain", "background", "backdrop", "at",
                   "with", "during", "thick", "out"})


def value_words() -> dict[str, dict[str, frozenset[str]]]:
    """Per factor and value, the words the captions use for it and for no other value of the factor."""
    tables = {"color": COLOR_WORDS, "size": SIZE_WORDS, "background": BACKGROUND_PHRASES, "shape": SHAPE_WORDS,
              "effect": EFFECT_PHRASES}
    out: dict[str, dict[str, frozenset[str]]] = {}
    for factor, table in tables.items():
        words = {value: {w for phrase in phrases for w in re.findall(r"[a-z]+", phrase)} - _STOP
                 for value, phrases in table.items()}
        out[factor] = {value: frozenset(ws - set().union(*(o for v, o in words.items() if v != value)))
                       for value, ws in words.items()}
    return out


def named_value(text: str, factor: str, table: dict[str, dict[str, frozenset[str]]] | None = None) -> str | None:
    """The one value of ``factor`` that ``text`` names, or None (no value, or several)."""
    table = table or value_words()
    words = set(re.findall(r"[a-z]+", text.lower()))
    hits = [value for value, vocab in table[factor].items() if words & vocab]
    return hits[0] if len(hits) == 1 else None


def first_named(terms: list[str], factor: str, table: dict[str, dict[str, frozenset[str]]] | None = None) -> str | None:
    """The value of ``factor`` named by the first of the ranked ``terms`` that names one."""
    table = table or value_words()
    for term in terms:
        value = named_value(term, factor, table)
        if value is not None:
            return value
    return None


def _text(decoded, kind: str, top: int) -> str:
    return ", ".join(decoded.words(top)) if kind == "vocab" else decoded.text


def factor_rates(decoded: list, scenes: list, kind: str, top: int = 5) -> dict[str, float]:
    """Per factor, the share of decodings that name the scene's true value: a sentence must name it and
    no other value; ranked terms (``vocab``) must name it before any other value in their top ``top``."""
    table = value_words()

    def says(d, factor: str):
        return first_named(d.words(top), factor, table) if kind == "vocab" else named_value(d.text, factor, table)

    pairs = list(zip(decoded, scenes, strict=True))
    return {factor: float(np.mean([says(d, factor) == getattr(s, factor) for d, s in pairs]))
            for factor in NAMED_FACTORS}


def decode_semantics(world: Any, aligner_dir: Any, *, n_images: int = 500, guided_images: int = 30,
                     decoders: tuple[str, ...] = ("vocab", "prefix", "guided"), seed: int = 737373,
                     guided_settings: dict | None = None, progress: bool = False) -> dict[str, Any]:
    """Figures of concept-to-text on ``world`` with the aligner saved in ``aligner_dir`` (see the module doc)."""
    from t2c_monitor.aligner import Aligner
    from t2c_monitor.concepts import encode_bank, load_bank_definition
    from t2c_monitor.decode.factory import DecoderSettings, create_decoder
    from t2c_monitor.decode.monitor import class_head_vectors
    from t2c_monitor.world.evaluate import default_bank_path
    from t2c_monitor.world.generate import generate

    clip, source = world.clip_model(device="cpu"), world.source_encoder(device="cpu")
    aligner = Aligner.load(aligner_dir, expect_source=source.identity, expect_clip=clip.identity)
    bank = encode_bank(load_bank_definition(default_bank_path()), clip)
    data = generate(n_images, seed=seed)
    images = data.pil_images()
    clip_vectors = F.normalize(clip.encode_images(images, progress=progress), dim=1)
    aligned = F.normalize(aligner.transform(source.encode_images(images, progress=progress)), dim=1)
    labels, class_vectors = class_head_vectors(source, aligner)
    shape_words = value_words()["shape"]
    out: dict[str, Any] = {"images": n_images, "class_vectors": len(labels), "decoders": {}}
    for kind in decoders:
        settings = DecoderSettings(kind=kind, top=5 if kind == "vocab" else 3, corpus=world.corpus,
                                   prefix=world.prefix_decoder_dir, lm=str(world.caption_lm_dir),
                                   guided=world.decode_section()["guided"] if guided_settings is None
                                   else guided_settings)
        made = create_decoder(settings, clip=clip, bank=bank, progress=progress)  # loaded once, re-centred below
        per_space = {}
        n = guided_images if kind == "guided" else n_images
        timing = 0.0
        for space, vectors in (("aligned", aligned[:n]), ("clip", clip_vectors[:n])):
            decoder = made.with_image_mean(vectors.mean(0))
            started = time.perf_counter()
            decoded = decoder.decode(vectors, space=clip.identity)
            if space == "aligned":
                timing = (time.perf_counter() - started) / n
            per_space[space] = factor_rates(decoded, data.scenes[:n], kind)
        decoder = made.with_image_mean(aligned.mean(0))
        heads = decoder.decode(class_vectors, space=clip.identity)
        hits = [bool(set(re.findall(r"[a-z]+", _text(d, kind, 3).lower())) & shape_words[label]) if kind == "vocab"
                else named_value(d.text, "shape") == label for d, label in zip(heads, labels, strict=True)]
        result = {"images": n, "seconds_per_vector": timing, "class_vector_hits": int(sum(hits)),
                  "class_texts": {label: d.words(3) for d, label in zip(heads, labels, strict=True)},
                  "aligned": per_space["aligned"], "clip": per_space["clip"],
                  "ratio": {f: per_space["aligned"][f] / per_space["clip"][f] if per_space["clip"][f] else None
                            for f in NAMED_FACTORS}}
        if kind == "vocab":
            result["vocab_size"] = len(decoder.vocabulary.terms)
            result["mixtures"] = mixture_naming(decoder.vocabulary, bank)
        out["decoders"][kind] = result
    return out


def mixture_naming(vocabulary, bank) -> dict[str, Any]:
    """Normalised sums of two bank concept vectors (of different factors, or two effects), decomposed by
    ``vocab`` (sparse): in how many are both concepts named among the terms (by their own name, or by a
    word the captions use for them, e.g. "tiny" for small)?"""
    from t2c_monitor.decode.vocab import VocabDecoder

    index = {name: i for i, name in enumerate(vocabulary.terms)}
    names = [n for n in bank.concept_names if n in index]
    factor_of = {n: _factor_of(n) for n in names}
    pairs = [(a, b) for a, b in itertools.combinations(names, 2)
             if factor_of[a] != factor_of[b] or factor_of[a] == "effect"]
    decoder = VocabDecoder(vocabulary, mode="sparse", top=5)  # text-side vectors: no image mean
    sums = F.normalize(torch.stack([vocabulary.vectors[index[a]] + vocabulary.vectors[index[b]] for a, b in pairs]),
                       dim=1)
    decoded = decoder.decode(sums, space=vocabulary.clip)
    table = value_words()

    def named(concept: str, terms: list[str]) -> bool:  # the concept itself, or a word the captions use for it
        factor = factor_of[concept] if factor_of[concept] in table else "effect"
        return any(t == concept or named_value(t, factor, table) == concept for t in terms)

    both = [named(a, d.words()) and named(b, d.words()) for d, (a, b) in zip(decoded, pairs, strict=True)]
    misses = [(a, b, d.words()) for ok, d, (a, b) in zip(both, decoded, pairs, strict=True) if not ok]
    return {"pairs": len(pairs), "named_by_both": int(sum(both)), "misses": misses[:5]}


def _factor_of(concept: str) -> str:
    from t2c_monitor.world.factors import EFFECTS, FACTORS

    for factor, values in FACTORS.items():
        if concept in values:
            return factor
    return "effect" if concept in EFFECTS else "other"
