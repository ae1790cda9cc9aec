"""Thumbnails of stored images for reports: small PNG data URIs, or None when the image cannot be read here."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 96


@dataclass(frozen=True)
class Thumb:
    """An image shown in a report: its file name, a value (a score), and its thumbnail if readable."""

    name: str
    value: float
    src: str | None


def thumbnail(uri: str) -> str | None:
    """A small PNG of a local image as a data URI; None when it is remote, moved or unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(uri.removeprefix("file://"))
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((SIZE, SIZE))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def top_images(values: np.ndarray, uris: list[str], n: int = 6, *, lowest: bool = False) -> list[Thumb]:
    """The ``n`` images with the highest (or lowest) ``values``."""
    order = np.argsort(values if lowest else -values)[:n]
    return [Thumb(Path(uris[i]).name if i < len(uris) else "?", float(values[i]),
                  thumbnail(uris[i]) if i < len(uris) else None) for i in order]
