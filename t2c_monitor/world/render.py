"""Drawing shapes-world images: numpy for everything batched, PIL only for the per-image shape mask.

Effects are made plainly visible at 64 px, because a small CLIP trained for minutes only learns
what it can see (DESIGN section 5): 2-px snow flakes, a strong Gaussian blur, a fog veil and a
blue night, each light enough that the shape beneath still shows (a darker night and a denser fog
hid most shapes from both models). Position, rotation, colour tone, background crop and pixel noise
vary per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from t2c_monitor.world.factors import IMAGE_SIZE, Scene

COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "green": (40, 175, 50),
    "blue": (35, 70, 225),
    "yellow": (240, 220, 35),
    "purple": (140, 45, 185),
    "orange": (250, 135, 25),
    "white": (248, 248, 248),
    "black": (18, 18, 18),
}
RADIUS_RANGE: dict[str, tuple[float, float]] = {"small": (9.0, 12.0), "large": (18.0, 23.0)}
BLUR_RADIUS = 3.2  # 2.6 was the effect the CLIP saw least (AUROC 0.86); 3.2 with bare "blurry" captions: 0.98
SNOW_FLAKES = (45, 80)
FOG_ALPHA = (0.38, 0.48)
FOG_RGB = np.array([208, 210, 214], dtype=np.float32)
NIGHT_GAIN = np.array([0.51, 0.555, 0.84], dtype=np.float32)
NOISE_SIGMA = 4.0
_TEMPLATE = 96  # background templates are cropped to IMAGE_SIZE at a random offset
_SUPERSAMPLE = 2


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    coarse = rng.normal(size=(size // cell + 2, size // cell + 2)).astype(np.float32)
    image = Image.fromarray(coarse).resize((size + 2 * cell, size + 2 * cell), Image.BILINEAR)
    return np.asarray(image)[cell : cell + size, cell : cell + size]


@lru_cache(maxsize=1)
def background_templates() -> dict[str, np.ndarray]:
    """One fixed 96x96 float32 RGB texture per background (the same in every process)."""
    rng = np.random.default_rng(20230613)
    s = _TEMPLATE
    out: dict[str, np.ndarray] = {}
    gray = np.full((s, s, 3), 128.0, np.float32) + 7.0 * _smooth_noise(rng, s, 12)[..., None]
    out["gray"] = gray
    sand = np.array([214, 190, 140], np.float32) + 9.0 * rng.normal(size=(s, s, 1)).astype(np.float32)
    out["sand"] = sand + 8.0 * _smooth_noise(rng, s, 8)[..., None]
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
    sky = (1 - t) * np.array([110, 165, 230], np.float32) + t * np.array([195, 225, 248], np.float32)
    clouds = np.clip(_smooth_noise(rng, s, 16), 0.6, None) - 0.6
    out["sky"] = np.broadcast_to(sky, (s, s, 3)) + 60.0 * clouds[..., None]
    grass = np.broadcast_to(np.array([72, 128, 48], np.float32), (s, s, 3)).copy()
    blades = rng.normal(size=(s // 2, s)).astype(np.float32).repeat(2, axis=0)
    blades = np.roll(blades, rng.integers(0, 2, size=s), axis=0)
    grass += 13.0 * blades[..., None] * np.array([0.6, 1.0, 0.5], np.float32)
    out["grass"] = grass
    brick = np.empty((s, s, 3), np.float32)
    bh, bw = 8, 16
    for row in range(s // bh):
        offset = (bw // 2) * (row % 2)
        for col in range(-1, s // bw + 1):
            x0 = col * bw + offset
            tone = np.array([155, 72, 50], np.float32) * rng.uniform(0.85, 1.1)
            brick[row * bh : (row + 1) * bh, max(x0, 0) : max(x0 + bw, 0)] = tone
            if 0 <= x0 < s:
                brick[row * bh : (row + 1) * bh, x0] = (182, 164, 150)
        brick[row * bh] = (182, 164, 150)
    out["brick"] = brick + 5.0 * rng.normal(size=(s, s, 1)).astype(np.float32)
    return {name: np.clip(t, 0, 255).astype(np.float32) for name, t in out.items()}


@lru_cache(maxsize=1)
def noise_tile() -> np.ndarray:
    """A fixed 256x256 Gaussian pixel-noise tile; each image adds a random crop of it (cheap, varied)."""
    rng = np.random.default_rng(7)
    return (NOISE_SIGMA * rng.standard_normal((256, 256, 3), dtype=np.float32)).astype(np.float32)


def _star(r: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else 0.42 * r
        theta = -np.pi / 2 + k * np.pi / 5
        points.append((radius * np.cos(theta), radius * np.sin(theta)))
    return points


def _outline(shape: str, r: float) -> list[tuple[float, float]]:
    """Polygon of a shape centred at 0 with size ``r`` (circles are drawn as ellipses)."""
    if shape == "square":
        h = 0.82 * r
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    if shape == "triangle":
        return [(r * np.cos(t), r * np.sin(t) + 0.15 * r) for t in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
    if shape == "cross":
        a, w = r, 0.34 * r
        return [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w),
                (-w, -w)]
    if shape == "star":
        return _star(1.1 * r)
    raise ValueError(f"shape has no polygon: {shape!r}")


def shape_mask(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage mask (IMAGE_SIZE x IMAGE_SIZE, values in [0, 1]) of one shape."""
    k = _SUPERSAMPLE
    canvas = Image.new("L", (IMAGE_SIZE * k, IMAGE_SIZE * k), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([k * (cx - r), k * (cy - r), k * (cx + r), k * (cy + r)], fill=255)
    else:
        c, s = np.cos(angle), np.sin(angle)
        points = [(k * (cx + x * c - y * s), k * (cy + x * s + y * c)) for x, y in _outline(shape, r)]
        draw.polygon(points, fill=255)
    small = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render(scenes: Sequence[Scene], rng: np.random.Generator) -> np.ndarray:
    """Draw ``scenes`` as a ``(n, 64, 64, 3)`` uint8 array; all randomness comes from ``rng``.

    Order: background, shape and pixel noise, then blur (which smooths the noise too), snow
    flakes, fog, night."""
    n, s = len(scenes), IMAGE_SIZE
    templates = background_templates()
    images = np.empty((n, s, s, 3), np.float32)
    if n == 0:
        return images.astype(np.uint8)
    radius_u = rng.random(n)
    centre_u = rng.random((n, 2))
    angles = rng.uniform(-0.25, 0.25, n)
    offsets = rng.integers(0, _TEMPLATE - s + 1, size=(n, 2))
    bg_gain = rng.uniform(0.9, 1.1, n).astype(np.float32)
    tone = rng.uniform(-14, 14, size=(n, 3)).astype(np.float32)
    tile = noise_tile()
    corners = rng.integers(0, tile.shape[0] - s + 1, size=(n, 2))
    for i, scene in enumerate(scenes):
        lo, hi = RADIUS_RANGE[scene.size]
        r = lo + (hi - lo) * radius_u[i]
        margin = r + 2.0
        cx, cy = margin + (s - 2 * margin) * centre_u[i]
        y0, x0 = offsets[i]
        ny, nx = corners[i]
        background = templates[scene.background][y0 : y0 + s, x0 : x0 + s] * bg_gain[i]
        mask = shape_mask(scene.shape, cx, cy, r, angles[i])[..., None]
        colour = np.asarray(COLOR_RGB[scene.color], np.float32) + tone[i]
        images[i] = background * (1.0 - mask) + colour * mask + tile[ny : ny + s, nx : nx + s]
        if scene.blur:  # after the noise: a blurred photo is smooth, its grain blurred away too
            blurred = Image.fromarray(np.clip(images[i], 0, 255).astype(np.uint8))
            images[i] = np.asarray(blurred.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)), np.float32)
    _snow(images, np.array([sc.snow for sc in scenes]), rng)
    fog = np.array([sc.fog for sc in scenes])
    alpha = rng.uniform(*FOG_ALPHA, size=n).astype(np.float32)[:, None, None, None]
    images[fog] = images[fog] * (1.0 - alpha[fog]) + FOG_RGB * alpha[fog]
    night = np.array([sc.night for sc in scenes])
    images[night] = images[night] * NIGHT_GAIN + np.array([0, 0, 6], np.float32)
    np.clip(images, 0, 255, out=images)
    return np.rint(images, out=images).astype(np.uint8)


def _snow(images: np.ndarray, snowy: np.ndarray, rng: np.random.Generator) -> None:
    """Scatter 2x2-pixel white flakes on the snowy images (in place)."""
    index = np.flatnonzero(snowy)
    if index.size == 0:
        return
    s = images.shape[1]
    counts = rng.integers(SNOW_FLAKES[0], SNOW_FLAKES[1] + 1, size=index.size)
    owner = np.repeat(index, counts)
    ys = rng.integers(0, s - 1, size=owner.size)
    xs = rng.integers(0, s - 1, size=owner.size)
    shade = rng.uniform(225, 255, size=owner.size).astype(np.float32)[:, None]
    for dy in (0, 1):
        for dx in (0, 1):
            images[owner, ys + dy, xs + dx] = shade
