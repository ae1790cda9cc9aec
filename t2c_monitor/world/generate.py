"""Generating shapes-world data: sampled scenes, rendered images, captions, and image folders.

Everything is deterministic under a seed: the scenes, the pixels and the captions each draw from
their own child stream of ``numpy.random.SeedSequence(seed)``, so the same ``(n, seed, shift)``
always gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from t2c_monitor.world.captions import caption
from t2c_monitor.world.factors import EFFECTS, FACTORS, Scene
from t2c_monitor.world.render import render
from t2c_monitor.world.shifts import Shift, parse_shift

IMAGE_FORMATS = {"png": "png", "jpeg": "jpg"}


@dataclass(frozen=True)
class WorldBatch:
    """Generated images with their truth: ``images`` is ``(n, 64, 64, 3)`` uint8."""

    images: np.ndarray
    scenes: list[Scene]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.scenes)

    def pil_images(self) -> list[Image.Image]:
        return [Image.fromarray(image) for image in self.images]

    def labels(self, factor: str) -> np.ndarray:
        """Integer labels of a factor (index into ``FACTORS[factor]``) or 0/1 of an effect."""
        if factor in EFFECTS:
            return np.array([getattr(s, factor) for s in self.scenes], dtype=np.int64)
        return np.array([s.label(factor) for s in self.scenes], dtype=np.int64)


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    scene_seq, pixel_seq, text_seq = np.random.SeedSequence(int(seed)).spawn(3)
    return np.random.default_rng(scene_seq), np.random.default_rng(pixel_seq), np.random.default_rng(text_seq)


def sample_scenes(n: int, rng: np.random.Generator, shift: Shift | None = None) -> list[Scene]:
    """Draw ``n`` scenes: factor values uniform unless shifted, each effect with its probability."""
    shift = shift or Shift()
    columns: dict[str, np.ndarray] = {}
    for factor, values in FACTORS.items():
        columns[factor] = rng.choice(len(values), size=n, p=shift.value_probabilities(factor))
    for effect in EFFECTS:
        columns[effect] = rng.random(n) < shift.effect_probability(effect)
    return [
        Scene(
            **{factor: FACTORS[factor][int(columns[factor][i])] for factor in FACTORS},
            **{effect: bool(columns[effect][i]) for effect in EFFECTS},
        )
        for i in range(n)
    ]


def generate(n: int, seed: int = 0, shift: Shift | str | Iterable[str] | None = None) -> WorldBatch:
    """Generate ``n`` images with scenes and captions, deterministic under ``seed``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not isinstance(shift, Shift):
        shift = parse_shift(shift)
    scene_rng, pixel_rng, text_rng = _streams(seed)
    scenes = sample_scenes(n, scene_rng, shift)
    images = render(scenes, pixel_rng)
    captions = [caption(scene, text_rng) for scene in scenes]
    return WorldBatch(images=images, scenes=scenes, captions=captions)


def iter_batches(n: int, seed: int, batch_size: int = 1024, shift: Shift | None = None) -> Iterator[WorldBatch]:
    """``generate`` in chunks of ``batch_size`` (chunk ``k`` uses seed ``seed * 1_000_003 + k``)."""
    for k, start in enumerate(range(0, n, batch_size)):
        yield generate(min(batch_size, n - start), seed=seed * 1_000_003 + k, shift=shift)


def write_images(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    shift: Shift | str | Iterable[str] | None = None,
    image_format: str = "png",
    progress: bool = False,
) -> Path:
    """Write ``n`` images and ``manifest.jsonl`` (each file's true factors and caption) to ``out_dir``.

    Returns the manifest path. Files are named ``img_000000.png`` ...; the same arguments always
    produce the same files.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    if not isinstance(shift, Shift):
        shift = parse_shift(shift)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extension = IMAGE_FORMATS[image_format]
    width = max(6, len(str(max(n - 1, 0))))
    manifest = out / "manifest.jsonl"
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar, manifest.open("w") as lines:
        task = bar.add_task("writing images", total=n)
        index = 0
        for batch in iter_batches(n, seed, shift=shift):
            for image, scene, text in zip(batch.pil_images(), batch.scenes, batch.captions, strict=True):
                name = f"img_{index:0{width}d}.{extension}"
                if image_format == "jpeg":
                    image.save(out / name, format="JPEG", quality=92)
                else:
                    image.save(out / name, format="PNG")
                lines.write(json.dumps({"file": name, **scene.to_dict(), "caption": text}) + "\n")
                index += 1
            bar.advance(task, len(batch))
    return manifest
