"""A vocabulary of words and phrases embedded once by a CLIP text tower, cached per CLIP identity.

The terms are the caller's (a bank's concepts, a user's word list) plus, by default, the whole
alphabetic words of open_clip's own BPE vocabulary (about 30,000, shipped with open_clip: no
download). Each term is embedded as it is, without a template, and normalised. Embedding 30,000
terms takes seconds on a small text tower and minutes on a large one, so a vocabulary is saved in
the artifact format of aligners and banks under ``<models>/vocabularies/`` and reused whenever
the same CLIP weights ask for the same terms; other weights (another sha256) get their own file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from t2c_monitor.artifacts import ArtifactFormat
from t2c_monitor.decode.base import check_space
from t2c_monitor.errors import ConfigError, ModelLoadError
from t2c_monitor.identity import ModelIdentity, as_dict, same_space

logger = logging.getLogger(__name__)

VOCABULARY_FORMAT = ArtifactFormat(
    label="vocabulary", marker="t2c-vocabulary", version=1, metadata_file="vocabulary.json",
    tensors_file="vectors.safetensors", checksum_key="vectors_sha256", written_by="t2c (a decoder's first use)",
    hint="delete the directory: the next decode embeds the vocabulary again",
)


# Words that say nothing about what is in a picture, left out of the BPE words (never out of a caller's own
# terms): English function words (a drift "in words" of "more in, the" names nothing), and the words for a
# picture itself, which every caption a CLIP learned from is about, so that what centring leaves of the
# modality gap points at them ("more picture").
FUNCTION_WORDS = frozenset({
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does",
    "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he",
    "her", "here", "hers", "herself", "him", "himself", "his", "how", "if", "in", "into", "is", "it", "its",
    "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once",
    "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so",
    "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these",
    "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what",
    "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours",
    "yourself", "yourselves"
})
PICTURE_WORDS = frozenset({
    "image", "images", "photo", "photos", "photograph", "photographs", "picture", "pictures", "pic", "pics"
})


@lru_cache(maxsize=1)
def bpe_words(min_length: int = 2) -> tuple[str, ...]:
    """The whole lower-case alphabetic words of open_clip's BPE vocabulary (tokens ending a word), less
    ``FUNCTION_WORDS`` and ``PICTURE_WORDS``."""
    from open_clip.tokenizer import SimpleTokenizer

    words = {token[:-4] for token in SimpleTokenizer().encoder if token.endswith("</w>")}
    return tuple(sorted(w for w in words if len(w) >= min_length and w.isascii() and w.isalpha() and w.islower()
                        and w not in FUNCTION_WORDS and w not in PICTURE_WORDS))


@dataclass(frozen=True)
class Vocabulary:
    """Terms and their unit text embeddings ``(n, d)`` in the space of ``clip``."""

    terms: tuple[str, ...]
    vectors: Tensor
    clip: ModelIdentity

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.terms):
            raise ValueError(f"vectors must be ({len(self.terms)}, d), got {tuple(self.vectors.shape)}")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def check_space(self, identity: ModelIdentity | dict | None) -> None:
        """Refuse vectors of another CLIP space (or of an unrecorded one)."""
        check_space(self.clip, identity, built="this vocabulary was embedded by")


def _key(clip: ModelIdentity, terms: tuple[str, ...]) -> str:
    digest = hashlib.sha256(json.dumps([clip.weights_sha256, clip.dim, list(terms)]).encode()).hexdigest()
    return f"{clip.weights_sha256[:12]}-{digest[:16]}"


def corpus_words(path: str | Path) -> frozenset[str]:
    """The lower-case alphabetic words a text corpus (one caption per line) uses."""
    import re

    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"Cannot read the corpus {path} ({exc.strerror or exc}): give a text file of captions, "
                          "one per line.") from exc
    return frozenset(re.findall(r"[a-z]+", text.lower()))


def build_vocabulary(clip: Any, terms: list[str] | tuple[str, ...] = (), *, include_bpe_words: bool = True,
                     known_words: frozenset[str] | set[str] | None = None, cache_dir: str | Path | None = None,
                     batch_size: int = 512, progress: bool = False) -> Vocabulary:
    """The vocabulary of ``terms`` (and the BPE words) for ``clip`` (an ``encoders.ClipModel``),
    read from ``cache_dir`` when embedded before by the same weights, else embedded and saved there.

    ``known_words`` keeps only the BPE words in it (the words of the corpus a small CLIP was trained
    on: the embedding of a word its text tower never saw is arbitrary and would outrank true ones);
    ``terms`` are always kept."""
    words = bpe_words() if include_bpe_words else ()
    if known_words is not None:
        words = tuple(w for w in words if w in known_words)
    unique = tuple(dict.fromkeys(t.strip() for t in (*terms, *words) if t.strip()))
    if not unique:
        raise ValueError("terms must name at least one word or phrase (or include_bpe_words=True)")
    identity: ModelIdentity = clip.identity
    directory = Path(cache_dir) / _key(identity, unique) if cache_dir is not None else None
    cached = _read_cached(directory, unique, identity) if directory is not None else None
    if cached is not None:
        return cached
    vectors = F.normalize(clip.encode_text(list(unique), batch_size=batch_size, progress=progress), dim=1)
    vocabulary = Vocabulary(terms=unique, vectors=vectors.contiguous(), clip=identity)
    if directory is not None:
        try:
            VOCABULARY_FORMAT.write(directory, {"vectors": vocabulary.vectors},
                                    {"terms": list(unique), "clip": as_dict(identity), "n": len(unique)})
        except OSError as exc:  # a full or read-only models cache costs the next run the embedding, no more
            logger.warning("the vocabulary could not be cached in %s (%s); it is embedded again next time",
                           directory, exc.strerror or exc)
    return vocabulary


def _read_cached(directory: Path, unique: tuple[str, ...], identity: ModelIdentity) -> Vocabulary | None:
    """The cached vocabulary, or None when there is none or it is unreadable (a cache is never an error)."""
    if not (directory / VOCABULARY_FORMAT.metadata_file).is_file():
        return None
    try:
        meta, tensors = VOCABULARY_FORMAT.read(directory, ("vectors",))
    except (ModelLoadError, OSError) as exc:
        logger.warning("ignoring the cached vocabulary in %s: %s", directory, exc)
        return None
    if tuple(meta.get("terms", ())) == unique and same_space(meta.get("clip"), identity):
        return Vocabulary(terms=unique, vectors=tensors["vectors"], clip=identity)
    return None


def vocabulary_of(vectors: Tensor, terms: list[str], clip: ModelIdentity) -> Vocabulary:
    """A vocabulary from vectors already embedded (normalised here)."""
    return Vocabulary(terms=tuple(terms), vectors=F.normalize(torch.as_tensor(vectors, dtype=torch.float32), dim=1),
                      clip=clip)


def with_concepts(vocabulary: Vocabulary, names: tuple[str, ...] | list[str], vectors: Tensor) -> Vocabulary:
    """``vocabulary`` with a bank's concepts first, each as the bank's own vector (the mean of its
    phrasings, not the bare name re-embedded); a term spelt like a concept gives way to it."""
    names = tuple(names)
    if vectors.shape != (len(names), vocabulary.dim):
        raise ValueError(f"vectors must be ({len(names)}, {vocabulary.dim}), got {tuple(vectors.shape)}")
    keep = [i for i, term in enumerate(vocabulary.terms) if term not in set(names)]
    return Vocabulary(terms=names + tuple(vocabulary.terms[i] for i in keep),
                      vectors=torch.cat([F.normalize(vectors.float(), dim=1), vocabulary.vectors[keep]]).contiguous(),
                      clip=vocabulary.clip)
