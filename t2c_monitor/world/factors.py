"""The factors of the shapes world: what every image is made of, and the truth record of one image.

Every image has one value of each factor (``shape``, ``color``, ``size``, ``background``) and any
subset of the effects (``snow``, ``night``, ``blur``, ``fog``). A ``Scene`` is that ground truth;
the manifest of ``t2c world images`` writes one per line, and benchmarks score concepts against it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FACTORS: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "cross", "star"),
    "color": ("red", "green", "blue", "yellow", "purple", "orange", "white", "black"),
    "size": ("small", "large"),
    "background": ("gray", "sand", "sky", "grass", "brick"),
}
EFFECTS: tuple[str, ...] = ("snow", "night", "blur", "fog")

# Probability of each effect when no shift says otherwise: common enough that the world's CLIP
# sees every effect thousands of times, rare enough that most images stay clean.
DEFAULT_EFFECT_PROBABILITY: float = 0.2

IMAGE_SIZE: int = 64

# In the codes of a caption (``Scene.codes`` order), a factor or effect the caption does not mention.
UNSAID: int = -1


@dataclass(frozen=True)
class Scene:
    """The true factors of one image (and its caption once one is written)."""

    shape: str
    color: str
    size: str
    background: str
    snow: bool = False
    night: bool = False
    blur: bool = False
    fog: bool = False

    def __post_init__(self) -> None:
        for factor, values in FACTORS.items():
            value = getattr(self, factor)
            if value not in values:
                raise ValueError(f"{factor} must be one of {', '.join(values)}; got {value!r}")

    @property
    def effects(self) -> tuple[str, ...]:
        """The effects present, in the canonical order of ``EFFECTS``."""
        return tuple(effect for effect in EFFECTS if getattr(self, effect))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def codes(self) -> tuple[int, ...]:
        """Every factor's label, then every effect as 0/1: what a caption naming everything says."""
        return tuple(self.label(f) for f in FACTORS) + tuple(int(getattr(self, e)) for e in EFFECTS)

    def label(self, factor: str) -> int:
        """Index of this scene's value of ``factor`` in ``FACTORS[factor]``."""
        if factor not in FACTORS:
            raise ValueError(f"factor must be one of {', '.join(FACTORS)}; got {factor!r}")
        return FACTORS[factor].index(getattr(self, factor))


def valid_factors_text() -> str:
    """A one-paragraph list of every factor, value and effect, for error messages and help."""
    parts = [f"{factor}={'|'.join(values)}:FRACTION" for factor, values in FACTORS.items()]
    parts += [f"{effect}=PROBABILITY" for effect in EFFECTS]
    return "; ".join(parts)
