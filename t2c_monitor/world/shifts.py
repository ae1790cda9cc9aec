"""Shift specs: how a user plants a distribution shift in generated images.

Two kinds of spec, combinable:

- ``night=0.5`` sets an effect's probability (default ``DEFAULT_EFFECT_PROBABILITY``);
- ``color=purple:0.4`` makes that share of images take that value: ``P(color=purple) = 0.4``, and
  the remaining ``0.6`` is spread evenly over the other colours. Several values of one factor may be
  set (``color=purple:0.4 color=red:0.3``) as long as their shares sum to at most 1.

Specs are parsed into a ``Shift``; anything malformed is refused with ``ConfigError`` listing the
valid factors and values, so a typo never silently generates an unshifted stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from t2c_monitor.errors import ConfigError
from t2c_monitor.world.factors import (
    DEFAULT_EFFECT_PROBABILITY,
    EFFECTS,
    FACTORS,
    valid_factors_text,
)


@dataclass(frozen=True)
class Shift:
    """Parsed shift specs: effect probabilities and forced value shares per factor."""

    effect_probabilities: dict[str, float] = field(default_factory=dict)
    value_shares: dict[str, dict[str, float]] = field(default_factory=dict)

    def effect_probability(self, effect: str) -> float:
        return self.effect_probabilities.get(effect, DEFAULT_EFFECT_PROBABILITY)

    def value_probabilities(self, factor: str) -> list[float]:
        """Sampling probability of each value of ``factor``, in ``FACTORS[factor]`` order."""
        values = FACTORS[factor]
        shares = self.value_shares.get(factor, {})
        free = [value for value in values if value not in shares]
        rest = 1.0 - sum(shares.values())
        if not free:
            total = sum(shares.values())
            return [shares[value] / total for value in values]
        return [shares[value] if value in shares else rest / len(free) for value in values]

    @property
    def is_empty(self) -> bool:
        return not self.effect_probabilities and not self.value_shares

    def to_specs(self) -> list[str]:
        """The shift written back as spec strings (round-trips through ``parse_shift``)."""
        specs = [f"{effect}={p:g}" for effect, p in self.effect_probabilities.items()]
        for factor, shares in self.value_shares.items():
            specs += [f"{factor}={value}:{share:g}" for value, share in shares.items()]
        return specs


def _refuse(spec: str, problem: str) -> ConfigError:
    return ConfigError(
        f"Bad shift spec {spec!r}: {problem}. Write EFFECT=PROBABILITY or FACTOR=VALUE:FRACTION with numbers "
        f"in [0, 1]; valid: {valid_factors_text()}."
    )


def _number(spec: str, text: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise _refuse(spec, f"{what} {text!r} is not a number") from None
    if not (0.0 <= number <= 1.0) or math.isnan(number):
        raise _refuse(spec, f"{what} {text} is outside [0, 1]")
    return number


def parse_shift(specs: str | Iterable[str] | None) -> Shift:
    """Parse shift specs (one string or several) into a ``Shift``; ``None`` or empty means no shift."""
    if specs is None:
        return Shift()
    if isinstance(specs, str):
        specs = [specs]
    effects: dict[str, float] = {}
    shares: dict[str, dict[str, float]] = {}
    for raw in specs:
        spec = raw.strip()
        name, sep, value = spec.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or not name or not value:
            raise _refuse(raw, "expected NAME=VALUE")
        if name in EFFECTS:
            if ":" in value:
                raise _refuse(raw, f"{name} is an effect: give its probability ({name}=0.5), not a value share")
            if name in effects:
                raise _refuse(raw, f"{name} is set twice")
            effects[name] = _number(raw, value, "probability")
        elif name in FACTORS:
            level, colon, fraction = value.partition(":")
            level = level.strip().lower()
            if level not in FACTORS[name]:
                raise _refuse(raw, f"{level!r} is not a value of {name} (one of {', '.join(FACTORS[name])})")
            if not colon:
                raise _refuse(raw, f"give the share of images to force, e.g. {name}={level}:0.4")
            factor_shares = shares.setdefault(name, {})
            if level in factor_shares:
                raise _refuse(raw, f"{name}={level} is set twice")
            factor_shares[level] = _number(raw, fraction.strip(), "fraction")
            if sum(factor_shares.values()) > 1.0 + 1e-9:
                raise _refuse(raw, f"the shares of {name} values sum to more than 1")
        else:
            raise _refuse(raw, f"unknown factor or effect {name!r}")
    return Shift(effect_probabilities=effects, value_shares=shares)
