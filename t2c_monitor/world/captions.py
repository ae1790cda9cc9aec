"""Captions of shapes-world images: every factor described, wording and order varied.

A CLIP learns a word only from captions that use it, and concept phrasings work best when they
speak the way captions do (DESIGN section 5: "at night" scored well where bare "night" did not).
So each factor has a few wordings, effects are prepositional or adjectival phrases, and the order
of the parts changes between sentences. The default concept bank (``concepts.yaml``) uses the
same wordings.
"""

from __future__ import annotations

import numpy as np

from t2c_monitor.world.factors import EFFECTS, FACTORS, UNSAID, Scene

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "cross": ("cross", "plus sign"),
    "star": ("star",),
}
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red",),
    "green": ("green",),
    "blue": ("blue",),
    "yellow": ("yellow",),
    "purple": ("purple", "violet"),
    "orange": ("orange",),
    "white": ("white",),
    "black": ("black",),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big", "huge"),
}
BACKGROUND_PHRASES: dict[str, tuple[str, ...]] = {
    "gray": ("on a gray background", "on plain gray", "against a gray backdrop"),
    "sand": ("on sand", "on the sand", "on a sandy beach"),
    "sky": ("in the sky", "against the sky", "on a sky background"),
    "grass": ("on grass", "on the grass", "on a lawn"),
    "brick": ("on a brick wall", "against bricks", "in front of a brick wall"),
}
EFFECT_PHRASES: dict[str, tuple[str, ...]] = {
    "snow": ("in the snow", "with snow falling", "during snowfall", "in a snowstorm"),
    "night": ("at night", "in the dark", "at nighttime"),
    "blur": ("blurry", "out of focus", "blurred"),
    "fog": ("in fog", "in the mist", "foggy", "in thick fog"),
}
OPENINGS: tuple[str, ...] = ("", "", "a photo of ", "an image of ", "a picture of ")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One caption naming every factor and every effect of ``scene``, in a random wording and order."""
    size, colour, shape = (_pick(rng, SIZE_WORDS[scene.size]), _pick(rng, COLOR_WORDS[scene.color]),
                           _pick(rng, SHAPE_WORDS[scene.shape]))
    if rng.random() < 0.75:
        subject = _article(f"{size} {colour} {shape}")
    else:
        subject = _article(f"{colour} {shape}") + (", " if rng.random() < 0.5 else " that is ") + size
    place = _pick(rng, BACKGROUND_PHRASES[scene.background])
    effects = [_pick(rng, EFFECT_PHRASES[e]) for e in scene.effects]
    rng.shuffle(effects)
    opening = _pick(rng, OPENINGS)
    layout = int(rng.integers(3))
    if layout == 0:
        parts = [f"{opening}{subject} {place}", *effects]
        return ", ".join(parts)
    if layout == 1:
        lead = ", ".join(effects)
        return (f"{lead}, " if lead else "") + f"{opening}{subject} {place}"
    tail = (", " + " and ".join(effects)) if effects else ""
    return f"{place}, {opening}{subject}{tail}"


def focus_caption(scene: Scene, rng: np.random.Generator, detail: float = 0.25,
                  effect_only: float = 0.0) -> tuple[str, tuple[int, ...]]:
    """A short caption about the shape, and what it says as codes (``Scene.codes`` order, UNSAID elsewhere).

    It always names the shape; size, colour and background each with probability ``detail``;
    each present effect with probability 0.5 ("a star", "a red star on grass, blurry"). It says
    nothing about what it leaves out, so in a CLIP batch it truly describes every image that
    agrees with what it does say. Such captions give the contrastive loss what full captions
    hardly do (DESIGN section 5: shape was not learned): a text matching all stars against all
    other shapes, a text matching all blurred images against sharp ones.

    With probability ``effect_only``, an image with effects is instead captioned by one of its
    effects alone ("blurry", "in the snow"): the bare phrasings the concept bank scores with,
    matching every image with that effect whatever its shape.
    """
    codes = [UNSAID] * (len(FACTORS) + len(EFFECTS))
    truth = scene.codes()
    names = list(FACTORS) + list(EFFECTS)
    if effect_only > 0 and scene.effects and rng.random() < effect_only:
        effect = _pick(rng, scene.effects)
        codes[names.index(effect)] = truth[names.index(effect)]
        return _pick(rng, EFFECT_PHRASES[effect]), tuple(codes)
    said = {"shape"} | {f for f in ("color", "size", "background") if rng.random() < detail}
    effects = [e for e in scene.effects if rng.random() < 0.5]
    for name in (*said, *effects):
        k = names.index(name)
        codes[k] = truth[k]
    adjectives = [_pick(rng, SIZE_WORDS[scene.size])] if "size" in said else []
    adjectives += [_pick(rng, COLOR_WORDS[scene.color])] if "color" in said else []
    subject = _article(" ".join([*adjectives, _pick(rng, SHAPE_WORDS[scene.shape])]))
    place = " " + _pick(rng, BACKGROUND_PHRASES[scene.background]) if "background" in said else ""
    text = subject + place + "".join(", " + _pick(rng, EFFECT_PHRASES[e]) for e in effects)
    return text, tuple(codes)
