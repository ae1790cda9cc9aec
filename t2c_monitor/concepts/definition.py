"""Bank definitions: what a concept bank file says (concepts, templates, classes), read before encoding.

A bank is defined in a plain text file or in YAML, then encoded with a CLIP model (``encode.py``):

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

Only ``concepts`` is required; a bank is named after its file unless it says otherwise, and is
version 1 unless it says otherwise. Each concept is encoded from every phrasing in every template
(and, for class-conditioned banks, ``template.format(f"{class} {phrasing}")`` for every class).

YAML is checked against a strict pydantic schema (``schema.py``: unknown keys refused, so a typo
such as ``template:`` is not silently ignored). What both formats share (spaces collapsed, no empty
phrasing, no phrasing or concept written twice, distinct class names, valid templates) is checked
here, once for both, as the definition is built. Every error is a ``ConfigError`` naming the file
and line or concept (``bank.yaml:3``, ``bank.yaml: concepts[2]``) and saying how to fix it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2c_monitor.concepts.schema import string_list, validate_bank_file
from t2c_monitor.errors import ConfigError
from t2c_monitor.templates import resolve_templates
from t2c_monitor.textfiles import clip, load_yaml, read_text

MAX_NAME = 500  # concept.name's width


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


def normalise_key(text: str) -> str:
    """How concept and class names are compared: case and runs of blanks do not count."""
    return re.sub(r"\s+", " ", text.strip()).lower()


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


_COMMENT = re.compile(r"(^|\s)#.*$")


def _without_comment(line: str) -> str:
    """The line without a shell-style comment (``#`` at its start or after a blank), stripped."""
    return _COMMENT.sub("", line).strip()


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from a text file: one per line; blank lines and comments (``# ...``) are skipped."""
    path = Path(path)
    text = read_text(path, what="class names file")
    names = tuple(s for s in (_without_comment(line) for line in text.splitlines()) if s)
    if not names:
        raise ConfigError(f"Class names file {str(path)!r} lists no classes: write one class name per line.")
    return names


def _make_concept(name: str | None, phrasings: Sequence[str], raw: Any, where: str) -> Concept:
    """One concept from its name (default: the first phrasing) and phrasings (default: the name).

    ``raw`` is what the file wrote (a line, a YAML string or mapping), shown in messages.
    """
    if not phrasings:
        phrasings = [name] if name else []
    cleaned = [_collapse(p) for p in phrasings]
    if not cleaned or any(not p for p in cleaned):
        raise ConfigError(f"{where}: empty concept text in {clip(raw)}; write a phrase on each side of every '|'.")
    keys = [normalise_key(p) for p in cleaned]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: concept {clip(raw)} repeats a phrasing; list each phrasing once.")
    name = _collapse(name) if name is not None else cleaned[0]
    if not name:
        raise ConfigError(f"{where}: concept {clip(raw)} has an empty name.")
    if any("\x00" in t for t in (name, *cleaned)):
        raise ConfigError(f"{where}: concept {str(raw)[:60]!r} holds a NUL byte, which no database or prompt "
                          "can carry: remove it.")
    control = next((ch for t in (name, *cleaned) for ch in t if unicodedata.category(ch) == "Cc"), None)
    if control is not None:  # an escape code in a name would drive the terminal of whoever reads an audit
        raise ConfigError(f"{where}: concept {clip(raw)} holds the control character {control!r}: remove it.")
    if len(name) > MAX_NAME:
        raise ConfigError(f"{where}: concept name {name[:40]!r}... has {len(name)} characters; names are kept to "
                          f"{MAX_NAME} characters: give it a shorter name (`name: ...`, with the long text as a "
                          "phrasing).")
    return Concept(name=name, phrasings=tuple(cleaned))


def _check_unique(concepts: Sequence[Concept], wheres: Sequence[str]) -> None:
    seen: dict[str, str] = {}
    for concept, where in zip(concepts, wheres, strict=True):
        key = normalise_key(concept.name)
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
        concepts.append(_make_concept(None, content.split("|"), content, where))
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
    """A bank from YAML (name, version, templates, classes, concepts); arguments override the file.

    The whole file is checked against ``BankFile``, the keys that arguments override included.
    """
    doc = load_yaml(text, where=source)
    bank = validate_bank_file(doc, source)
    wheres = [f"{source}: concepts[{i}]" for i in range(len(bank.concepts))]
    concepts = [
        _make_concept(entry.name, entry.phrasings, raw, where)
        for entry, raw, where in zip(bank.concepts, doc["concepts"], wheres, strict=True)
    ]
    return _definition(
        name or bank.name or Path(source).stem,
        version if version is not None else bank.version,
        concepts,
        wheres,
        templates if templates is not None else bank.templates,
        classes if classes is not None else bank.classes,
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
    """The definition, once what both formats share is checked (arguments included, which no schema saw)."""
    if not concepts:
        raise ConfigError(f"{source} defines no concepts: write one concept per line (or a 'concepts' list).")
    _check_unique(concepts, wheres)
    try:
        version = int(version)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: bank version must be an integer, got {version!r}.") from exc
    if not str(name).strip():
        raise ConfigError(f"{source}: the bank needs a name.")
    class_names = tuple(_collapse(c) for c in string_list(classes, f"{source}: 'classes'"))
    if any(not c for c in class_names) or len({normalise_key(c) for c in class_names}) != len(class_names):
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
    text = read_text(path, what="concept bank file")
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
