"""Concept banks: named, versioned sets of text concepts turned into unit vectors in one CLIP space.

A bank is defined in a plain text file or in YAML, then encoded with a CLIP model:

Text file (one concept per line; ``#`` at the start of a line or after a blank starts a comment,
as in a shell, while a ``#`` inside a word is text, as in ``C# code``; ``|`` separates phrasings
of one concept, the first phrasing names it)::

    # colours and scenes
    red
    at night | a night scene | in the dark

YAML::

    name: shapes-world
    version: 2
    templates: paper            # paper (default), imagenet80, plain, or a list of '{}' strings
    classes: [circle, square]   # optional: class-conditioned concepts (paper, section 4.1); one name or a list
    concepts:
      - red
      - at night | in the dark
      - name: snow
        phrasings: [in the snow, covered in snow]

Each concept vector is the normalised mean over all its prompts -- every phrasing in every
template (and, for class-conditioned banks, ``template.format(f"{class} {phrasing}")`` for every
class) -- of the prompts' *normalised* text embeddings, as open_clip's zero-shot classifier does.
A bank records the identity of the CLIP model that encoded it; ``check_same_space`` refuses to
compare its vectors with vectors of another CLIP space.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from t2c_monitor.artifacts import ArtifactFormat
from t2c_monitor.errors import ConfigError, ModelLoadError, SpaceMismatchError
from t2c_monitor.identity import ModelIdentity, as_dict, describe, same_space
from t2c_monitor.progress import progress_bar
from t2c_monitor.templates import resolve_templates

if TYPE_CHECKING:
    from t2c_monitor.encoders import ClipModel

VECTORS_FILE = "vectors.safetensors"
METADATA_FILE = "bank.json"
FORMAT = "t2c-concept-bank"
FORMAT_VERSION = 1
REQUIRED_METADATA = ("name", "version", "clip", "templates", "concepts")
REENCODE_HINT = "re-encode the bank with `t2c concepts encode BANKFILE --clip SPEC --out DIR`"
BANK_FORMAT = ArtifactFormat(label="concept bank", marker=FORMAT, version=FORMAT_VERSION, metadata_file=METADATA_FILE,
                             tensors_file=VECTORS_FILE, checksum_key="vectors_sha256",
                             written_by="`t2c concepts encode --out`", hint=REENCODE_HINT)


class ConceptTruncatedWarning(UserWarning):
    """A concept's prompt has more tokens than the CLIP tokenizer's context length and was cut."""


@dataclass(frozen=True)
class Concept:
    """A concept: its name and the phrasings whose embeddings are averaged into its vector."""

    name: str
    phrasings: tuple[str, ...]


@dataclass(frozen=True)
class BankDefinition:
    """What a bank file says, before encoding: concepts, templates, optional classes."""

    name: str
    version: int
    concepts: tuple[Concept, ...]
    templates: tuple[str, ...]
    classes: tuple[str, ...] = ()

    def prompts(self, concept: Concept) -> list[str]:
        """Every text encoded for ``concept``: phrasings x templates (x classes)."""
        subjects = (
            [f"{c} {p}" for c in self.classes for p in concept.phrasings] if self.classes else list(concept.phrasings)
        )
        return [template.format(subject) for subject in subjects for template in self.templates]


# ----------------------------------------------------------------------------------------------
# reading bank definitions


def _normalise_key(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip()).lower()


def _string_list(value: Any, what: str) -> tuple[str, ...]:
    """``value`` as names: ``None`` -> none, one string -> one name, a list of strings -> those names.

    Anything else is refused: iterating a string would split it into letters, and YAML reads
    ``yes`` or ``42`` as a boolean or a number.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(
        f"{what} must be a string or a list of strings, got {value!r}; quote names that YAML reads as "
        "numbers or booleans, e.g. ['42', 'yes']."
    )


_COMMENT = re.compile(r"(^|\s)#.*$")


def _without_comment(line: str) -> str:
    """The line without a shell-style comment (``#`` at its start or after a blank), stripped."""
    return _COMMENT.sub("", line).strip()


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from a text file: one per line; blank lines and comments (``# ...``) are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read class names file {str(path)!r}: {exc}.") from exc
    names = tuple(s for s in (_without_comment(line) for line in text.splitlines()) if s)
    if not names:
        raise ConfigError(f"Class names file {str(path)!r} lists no classes: write one class name per line.")
    return names


def _make_concept(raw: Any, where: str) -> Concept:
    """One concept from a line (``a | b``), a string, or a mapping ``{name, phrasings}``."""
    if isinstance(raw, dict):
        unknown = set(raw) - {"name", "phrasings"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} in concept; use 'name' and 'phrasings'.")
        phrasings = raw.get("phrasings")
        if not phrasings:
            phrasings = [str(raw["name"])] if raw.get("name") else []
        elif isinstance(phrasings, str):
            phrasings = phrasings.split("|")
        else:
            phrasings = _string_list(phrasings, f"{where}: 'phrasings'")
        name = raw.get("name")
    elif isinstance(raw, str):
        phrasings, name = raw.split("|"), None
    else:
        raise ConfigError(f"{where}: a concept must be a string or a mapping with 'name' and 'phrasings', got {raw!r}.")
    cleaned = [re.sub(r"\s+", " ", str(p)).strip() for p in phrasings]
    if not cleaned or any(not p for p in cleaned):
        raise ConfigError(f"{where}: empty concept text in {raw!r}; write a phrase on each side of every '|'.")
    keys = [_normalise_key(p) for p in cleaned]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: concept {raw!r} repeats a phrasing; list each phrasing once.")
    name = re.sub(r"\s+", " ", str(name)).strip() if name is not None else cleaned[0]
    if not name:
        raise ConfigError(f"{where}: concept {raw!r} has an empty name.")
    return Concept(name=name, phrasings=tuple(cleaned))


def _check_unique(concepts: Sequence[Concept], wheres: Sequence[str]) -> None:
    seen: dict[str, str] = {}
    for concept, where in zip(concepts, wheres, strict=True):
        key = _normalise_key(concept.name)
        if key in seen:
            raise ConfigError(
                f"Duplicate concept {concept.name!r} at {where} (first at {seen[key]}): "
                "remove one, or merge them as phrasings of one concept with '|'."
            )
        seen[key] = where


def parse_bank_text(
    text: str,
    *,
    name: str,
    version: int = 1,
    templates: str | Sequence[str] | None = None,
    classes: str | Sequence[str] | None = None,
    source: str = "<text>",
) -> BankDefinition:
    """A bank from plain text: one concept per line, ``a | b`` phrasings.

    ``#`` at the start of a line or after a blank starts a comment (``red  # a colour`` is ``red``);
    a ``#`` inside a word is text (``C# code`` is a concept).
    """
    concepts, wheres = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        content = _without_comment(line)
        if not content:
            continue
        where = f"{source}:{number}"
        concepts.append(_make_concept(content, where))
        wheres.append(where)
    return _definition(name, version, concepts, wheres, templates, classes, source)


def parse_bank_yaml(
    text: str,
    *,
    name: str | None = None,
    version: int | None = None,
    templates: str | Sequence[str] | None = None,
    classes: str | Sequence[str] | None = None,
    source: str = "<yaml>",
) -> BankDefinition:
    """A bank from YAML (name, version, templates, classes, concepts); arguments override the file."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("concepts"), list):
        raise ConfigError(f"{source}: a YAML bank must be a mapping with a 'concepts' list.")
    unknown = set(doc) - {"name", "version", "templates", "classes", "concepts"}
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)}; use name, version, templates, classes, concepts.")
    wheres = [f"{source}: concepts[{i}]" for i in range(len(doc["concepts"]))]
    concepts = [_make_concept(raw, where) for raw, where in zip(doc["concepts"], wheres, strict=True)]
    bank_name = name or doc.get("name") or Path(source).stem
    return _definition(
        bank_name,
        version if version is not None else doc.get("version", 1),
        concepts,
        wheres,
        templates if templates is not None else doc.get("templates"),
        classes if classes is not None else _string_list(doc.get("classes"), f"{source}: 'classes'"),
        source,
    )


def _definition(
    name: str,
    version: Any,
    concepts: list[Concept],
    wheres: list[str],
    templates: str | Sequence[str] | None,
    classes: str | Sequence[str] | None,
    source: str,
) -> BankDefinition:
    if not concepts:
        raise ConfigError(f"{source} defines no concepts: write one concept per line (or a 'concepts' list).")
    _check_unique(concepts, wheres)
    try:
        version = int(version)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: bank version must be an integer, got {version!r}.") from exc
    if not str(name).strip():
        raise ConfigError(f"{source}: the bank needs a name.")
    class_names = tuple(re.sub(r"\s+", " ", c).strip() for c in _string_list(classes, f"{source}: 'classes'"))
    if any(not c for c in class_names) or len({_normalise_key(c) for c in class_names}) != len(class_names):
        raise ConfigError(f"{source}: class names must be non-empty and distinct, got {list(class_names)!r}.")
    try:
        resolved = resolve_templates(templates)
    except ConfigError as exc:
        raise ConfigError(f"{source}: templates: {exc}") from exc
    return BankDefinition(str(name).strip(), version, tuple(concepts), resolved, class_names)


def load_bank_definition(
    path: str | Path,
    *,
    name: str | None = None,
    version: int | None = None,
    templates: str | Sequence[str] | None = None,
    classes: str | Sequence[str] | None = None,
) -> BankDefinition:
    """Read a bank file: ``.yaml``/``.yml`` as YAML, anything else as plain text (named after the file).

    ``name``, ``version``, ``templates`` and ``classes``, when given, override what the file says.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read concept bank file {str(path)!r}: {exc}.") from exc
    if path.suffix.lower() in {".yaml", ".yml"}:
        return parse_bank_yaml(text, name=name, version=version, templates=templates, classes=classes, source=str(path))
    return parse_bank_text(
        text,
        name=name or path.stem,
        version=1 if version is None else version,
        templates=templates,
        classes=classes,
        source=str(path),
    )


# ----------------------------------------------------------------------------------------------
# the encoded bank


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
    clip: dict
    templates: tuple[str, ...]
    concept_names: tuple[str, ...]
    phrasings: tuple[tuple[str, ...], ...]
    vectors: Tensor
    classes: tuple[str, ...] = ()
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def __post_init__(self) -> None:
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
        keys = [_normalise_key(n) for n in self.concept_names]
        try:
            return keys.index(_normalise_key(concept))
        except ValueError:
            raise ConfigError(
                f"Concept {concept!r} is not in bank {self.name} v{self.version}; "
                f"it has: {', '.join(self.concept_names)}."
            ) from None

    def check_space(self, clip: ModelIdentity | dict | None, *, what: str = "aligned vectors") -> None:
        """Raise ``SpaceMismatchError`` unless ``clip`` is the CLIP model this bank was encoded with."""
        check_same_space(self.clip, clip, what=what)

    def to_metadata(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "clip": self.clip,
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
        clip_dim = bank.clip.get("dim") if isinstance(bank.clip, dict) else None
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


# ----------------------------------------------------------------------------------------------
# encoding


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
        clip=clip.identity.to_dict(),
        templates=definition.templates,
        concept_names=tuple(c.name for c in definition.concepts),
        phrasings=tuple(c.phrasings for c in definition.concepts),
        vectors=vectors,
        classes=definition.classes,
    )
