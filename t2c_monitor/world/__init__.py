"""The shapes world: a procedural image world with its own trained CLIP, source encoder and caption LM.

It is the embedded default of ``make demo`` (models that run with no downloads) and the ground
truth against which every semantic claim of text-to-concept is measured (DESIGN section 5).

Light imports only here (numpy, PIL); training and loading live in ``build`` and the model
modules, imported when used.
"""

from t2c_monitor.world.factors import (
    DEFAULT_EFFECT_PROBABILITY,
    EFFECTS,
    FACTORS,
    IMAGE_SIZE,
    Scene,
)
from t2c_monitor.world.generate import WorldBatch, generate, write_images
from t2c_monitor.world.shifts import Shift, parse_shift

__all__ = [
    "DEFAULT_EFFECT_PROBABILITY", "EFFECTS", "FACTORS", "IMAGE_SIZE", "Scene", "Shift", "WorldBatch", "generate",
    "parse_shift", "write_images",
]
