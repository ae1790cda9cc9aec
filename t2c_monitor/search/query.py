"""What a search asks, as typed values: concept-logic constraints and the corpus they run over.

A constraint (the paper's Section 5.3) is ``(concept, k, sign)``: an image's similarity to the
concept must be at least ``k`` standard deviations above (``+``) or below (``-``) the concept's mean
over the searched corpus. On the command line it is written ``CONCEPT:+K`` or ``CONCEPT:-K``
("night:+2", "snow:-0"); a concept is a name of the monitor's bank, or free text written
``text:WORDS`` ("text:a blurry red star:+1"), which is encoded with the monitor's CLIP.

A corpus is a monitor's stored images, optionally narrowed to batches, a time range (when the
image was stored) and metadata equalities (``label=cat``, matched against the manifest columns
kept with each image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from t2c_monitor.errors import ConfigError

FREE_TEXT_PREFIX = "text:"
MAX_CONSTRAINTS = 16
MAX_K = 100.0

Sign = Literal["+", "-"]


@dataclass(frozen=True)
class Constraint:
    """An image's similarity to ``concept`` is at least ``k`` standard deviations above (``+``) or below
    (``-``) the concept's corpus mean. ``free_text``: ``concept`` is text to encode, not a bank name."""

    concept: str
    k: float
    sign: Sign
    free_text: bool = False

    def __post_init__(self) -> None:
        if not self.concept.strip():
            raise ConfigError("A constraint names no concept: write CONCEPT:+K, e.g. night:+2.")
        if "\x00" in self.concept:
            raise ConfigError("A constraint's concept holds a NUL byte; remove it.")
        if self.sign not in ("+", "-"):
            raise ConfigError(f"Constraint sign must be '+' or '-', got {self.sign!r}.")
        if not (isinstance(self.k, (int, float)) and math.isfinite(self.k) and 0 <= self.k <= MAX_K):
            raise ConfigError(f"Constraint k must be a number from 0 to {MAX_K:g} standard deviations, got {self.k!r}.")

    @property
    def label(self) -> str:
        """How the constraint is written back: ``night:+2``, ``text:a red star:-0.5``."""
        return f"{FREE_TEXT_PREFIX if self.free_text else ''}{self.concept}:{self.sign}{self.k:g}"

    def holds(self, z: float) -> bool:
        """Whether a standardised similarity ``z`` satisfies the constraint."""
        return z >= self.k if self.sign == "+" else z <= -self.k

    def to_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "k": self.k, "sign": self.sign, "free_text": self.free_text,
                "label": self.label}


def parse_constraint(text: str) -> Constraint:
    """``CONCEPT:+K`` / ``CONCEPT:-K`` / ``text:FREE TEXT:+K`` as a ``Constraint`` (``ConfigError`` naming
    what is wrong otherwise). The last colon separates the concept from its bound, so a concept may hold
    colons itself."""
    example = "write CONCEPT:+K or CONCEPT:-K, e.g. night:+2 or snow:-0 (free text: 'text:a red star:+1')"
    concept, colon, bound = text.rpartition(":")
    if not colon or not concept:
        raise ConfigError(f"Constraint {text!r} has no ':' bound: {example}.")
    bound = bound.strip()
    sign, number = bound[:1], bound[1:].strip()
    if sign not in ("+", "-"):
        raise ConfigError(f"Constraint {text!r}: the bound {bound!r} must start with '+' (above the mean) or '-' "
                          f"(below it): {example}.")
    try:
        k = float(number)
    except ValueError:
        raise ConfigError(f"Constraint {text!r}: k {number!r} is not a number: {example}.") from None
    if not math.isfinite(k) or k < 0:
        raise ConfigError(f"Constraint {text!r}: k must be a finite number of standard deviations >= 0 "
                          "(the sign says above or below).")
    free = concept.startswith(FREE_TEXT_PREFIX)
    name = concept[len(FREE_TEXT_PREFIX):] if free else concept
    if not name.strip():
        raise ConfigError(f"Constraint {text!r} names no concept: {example}.")
    return Constraint(concept=name.strip(), k=k, sign=sign, free_text=free)  # type: ignore[arg-type]


def parse_constraints(texts: list[str] | tuple[str, ...]) -> list[Constraint]:
    """Every constraint of a query, in order (the order the step counts follow)."""
    if not texts:
        raise ConfigError("Give at least one constraint, e.g. night:+2 red:+1.5 snow:-0.")
    if len(texts) > MAX_CONSTRAINTS:
        raise ConfigError(f"A query takes at most {MAX_CONSTRAINTS} constraints; got {len(texts)}.")
    return [parse_constraint(t) for t in texts]


def parse_where(texts: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE`` metadata filters (matched against the manifest columns stored with each image)."""
    where: dict[str, str] = {}
    for text in texts:
        key, eq, value = text.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--where {text!r}: write KEY=VALUE, e.g. --where label=cat.")
        where[key.strip()] = value
    return where


@dataclass(frozen=True)
class Corpus:
    """The images a search runs over: a monitor's stored images, optionally narrowed."""

    monitor_id: int
    dim: int
    batches: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    where: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        parts = []
        if self.batches:
            parts.append("batches " + ", ".join(self.batches))
        if self.since or self.until:
            parts.append(f"stored {self.since or '…'} to {self.until or 'now'}")
        parts.extend(f"{k}={v}" for k, v in sorted(self.where.items()))
        return "; ".join(parts) or "every stored image"

    def to_dict(self) -> dict[str, Any]:
        return {"batches": list(self.batches), "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None, "where": dict(self.where),
                "dim": self.dim}
