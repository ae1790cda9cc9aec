"""Decode image bytes into RGB pictures, or into a short failure reason that ingest records.

One bad file must never stop a batch: ``load_image`` returns either a ``DecodedImage`` or a
``FailedImage`` and never raises for bad input. Reasons read ``"<category>: <detail>"`` with a
category from ``FAILURE_CATEGORIES``, so dashboards can group failures by
``failure_category(reason)``.

What "decoded" means here:
- only the formats in ``ACCEPTED_FORMATS`` are opened (JPEG, PNG, WebP, BMP, GIF, TIFF; a
  multi-picture JPEG comes through the JPEG plugin and reports ``MPO``); other formats Pillow
  knows (EPS runs Ghostscript, for one) are refused as ``unsupported`` rather than handed to riskier decoders;
- the pixel count is checked from the header, before any pixel memory is allocated, against
  ``max_pixels`` (the decompression-bomb guard). Pillow's own guard uses the global
  ``Image.MAX_IMAGE_PIXELS``; we identify the file with the format plugins directly so that
  global neither decides nor warns, and no thread has to mutate it;
- the whole image is decoded (``load()``) so a truncated file fails here, not in the encoder;
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left as it is (False by default);
- EXIF orientation is applied; GIF/WebP/PNG animations and multi-page TIFFs give their first frame;
- the result is RGB: transparent pixels (alpha, or a palette / tRNS transparent colour) are
  composited over white, not dropped; 16-bit greyscale is scaled to 8 bits (v * 255 / 65535,
  rounded), not clipped; CMYK is converted with Pillow's plain formula (ICC profiles are not
  applied); floating-point images are refused as ``unsupported``.

Everything here is safe to call from several threads at once: each call works on its own
buffer and image objects, and Pillow's plugin registry is filled once at import time.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from t2c_monitor.errors import ImageDecodeError
from t2c_monitor.sources import SourceItem, read_bytes

DEFAULT_MAX_PIXELS = 64_000_000
"""Default decompression-bomb limit: width * height above this is refused (64 megapixels)."""

BACKGROUND_RGB = (255, 255, 255)
"""Transparent pixels are composited over this colour (white)."""

FAILURE_CATEGORIES: tuple[str, ...] = (
    "empty file",  # zero bytes
    "unreadable",  # missing path, permission denied, I/O error
    "unknown protocol",  # no fsspec implementation installed for the URI's scheme
    "missing uri",  # a manifest row without a URI
    "bad metadata",  # a manifest row whose capture time cannot be parsed
    "not an image",  # no decoder recognises the bytes (a text file named .jpg)
    "unsupported",  # a recognised but refused format or pixel mode
    "truncated",  # the data ends before the image does
    "corrupt",  # the decoder rejects the data for another reason
    "too large",  # over the pixel limit (decompression bomb) or the byte limit
    "too slow",  # reading and decoding took longer than the monitor's ingest.decode_timeout_s
    "refused",  # outside the monitor's allowed roots, a link out of the source folder, local in a remote manifest
)
"""The stable first word(s) of every failure reason."""

Image.init()  # register every plugin once, at import, so threads only read the registry
ACCEPTED_FORMATS: tuple[str, ...] = tuple(f for f in ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF") if f in Image.OPEN)
"""Pillow format ids this module opens; everything else is ``unsupported``."""

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_MAX_DETAIL = 200


@dataclass(frozen=True)
class DecodedImage:
    """A decoded RGB image with its identity: sha256 over the raw bytes, size after EXIF rotation."""

    uri: str
    sha256: str
    n_bytes: int
    width: int
    height: int
    image: Image.Image
    format: str


@dataclass(frozen=True)
class FailedImage:
    """An image that could not be used, with a categorised reason; hash and size when bytes were read."""

    uri: str
    reason: str
    sha256: str | None
    n_bytes: int | None


def failure_category(reason: str) -> str:
    """The category word(s) a failure reason starts with (``"truncated"``), for grouping."""
    head = reason.split(":", 1)[0].strip()
    return head if head in FAILURE_CATEGORIES else "corrupt"


def _human_pixels(n: int) -> str:
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f} gigapixels"
    if n >= 1_000_000:
        return f"{n / 1e6:g} megapixels"
    return f"{n} pixels"


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _classify(exc: Exception, doing: str) -> str:
    """A failure reason for an exception a decoder raised while ``doing`` something."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"too large: {_short(exc)}"
    if isinstance(exc, MemoryError):
        return f"too large: out of memory while {doing}"
    text = str(exc).lower()
    if "too large" in text:  # e.g. a PNG text chunk over PngImagePlugin.MAX_TEXT_CHUNK
        return f"too large: {_short(exc)} (while {doing})"
    if isinstance(exc, EOFError) or any(w in text for w in ("truncated", "premature end", "incomplete")):
        return f"truncated: {_short(exc)} (while {doing})"
    return f"corrupt: {type(exc).__name__}: {_short(exc)} (while {doing})"


def _other_format(prefix: bytes) -> str | None:
    """The Pillow format (outside ``ACCEPTED_FORMATS``) whose signature matches ``prefix``, if any."""
    for fmt, (_, accept) in Image.OPEN.items():
        if fmt in ACCEPTED_FORMATS or accept is None:
            continue
        try:
            matched = accept(prefix) is True
        except Exception:  # a signature test that cannot read this prefix simply does not match
            matched = False
        if matched:
            return fmt
    return None


def _identify(data: bytes, max_pixels: int) -> Image.Image:
    """Open ``data`` with the accepted format plugins and check the header size; decodes no pixels.

    This is ``Image.open`` without its global pixel limit: plugins raise many exception types
    on malformed headers, so every exception of the plugin is turned into a reason.
    """
    prefix = data[:16]
    for fmt in ACCEPTED_FORMATS:
        factory, accept = Image.OPEN[fmt]
        result = accept(prefix) if accept is not None else True
        if isinstance(result, str):  # Pillow's way of saying "recognised, but not built in"
            raise ImageDecodeError(f"unsupported: {result}")
        if not result:
            continue
        try:
            im = factory(io.BytesIO(data), "")
        except Exception as exc:
            raise ImageDecodeError(_classify(exc, f"reading the {fmt} header")) from exc
        width, height = im.size
        if width * height > max_pixels:
            im.close()
            raise ImageDecodeError(
                f"too large: image is {width}x{height} = {_human_pixels(width * height)}, over the "
                f"limit of {_human_pixels(max_pixels)} (decompression bomb guard)"
            )
        if width < 1 or height < 1:
            im.close()
            raise ImageDecodeError(f"corrupt: image header says {width}x{height} pixels")
        return im
    other = _other_format(prefix)
    if other is not None:
        raise ImageDecodeError(
            f"unsupported: {other} images are not accepted (accepted: {', '.join(ACCEPTED_FORMATS)})"
        )
    raise ImageDecodeError(f"not an image: no accepted format recognises the first bytes {data[:8]!r}")


def _scale_16bit(values: np.ndarray) -> Image.Image:
    """Greyscale ``L`` from 16-bit values, v * 255 / 65535 rounded (so 65535 -> 255, 257 -> 1)."""
    wide = values.astype(np.uint32)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))


def _to_rgb(im: Image.Image) -> Image.Image:
    """An RGB copy of a loaded image: alpha over white, 16-bit scaled, palettes expanded."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _scale_16bit(np.asarray(im)).convert("RGB")
    if mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageDecodeError(
                f"unsupported: 32-bit integer pixels in {values.min()}..{values.max()}, outside 0..65535"
            )
        return _scale_16bit(values).convert("RGB")
    if mode == "F":
        raise ImageDecodeError("unsupported: floating-point pixels (mode F)")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        try:
            rgba = im.convert("RGBA")
        except ValueError as exc:
            raise ImageDecodeError(f"unsupported: pixel mode {mode} with transparency ({_short(exc)})") from exc
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return im
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise ImageDecodeError(f"unsupported: pixel mode {mode} ({_short(exc)})") from exc


def decode_image(data: bytes, uri: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode ``data`` fully into an RGB ``DecodedImage``; ``ImageDecodeError(reason)`` when it cannot.

    ``uri`` is only carried into the result. ``max_pixels`` bounds width * height and is
    checked before pixels are decoded (wire it to the monitor's settings).
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if not data:
        raise ImageDecodeError("empty file: 0 bytes")
    im = _identify(data, max_pixels)
    try:
        fmt = im.format or "unknown"
        try:
            im.load()
        except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, ... on bad data
            raise ImageDecodeError(_classify(exc, f"decoding {fmt} pixels")) from exc
        try:
            upright = ImageOps.exif_transpose(im)
        except Exception as exc:  # a malformed EXIF block
            raise ImageDecodeError(_classify(exc, "applying the EXIF orientation")) from exc
        rgb = _to_rgb(upright)
    finally:
        im.close()
    return DecodedImage(
        uri=uri,
        sha256=hashlib.sha256(data).hexdigest(),
        n_bytes=len(data),
        width=rgb.width,
        height=rgb.height,
        image=rgb,
        format=fmt,
    )


def load_image(
    item: SourceItem, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None
) -> DecodedImage | FailedImage:
    """Read and decode one item; a ``FailedImage`` with a categorised reason for any bad input.

    An item that already carries an error (from ``resolve_source``) fails without being read.
    Only ``ImageDecodeError`` is turned into a failure; a bad argument still raises.
    """
    if item.error is not None:
        return FailedImage(uri=item.uri, reason=item.error, sha256=None, n_bytes=None)
    try:
        data = read_bytes(item.uri, max_bytes=max_bytes)
    except ImageDecodeError as exc:
        return FailedImage(uri=item.uri, reason=str(exc), sha256=None, n_bytes=None)
    try:
        return decode_image(data, item.uri, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return FailedImage(uri=item.uri, reason=str(exc), sha256=hashlib.sha256(data).hexdigest(), n_bytes=len(data))


def load_files(
    paths: Sequence[str | Path], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[list[Image.Image], list[int], list[dict[str, str]]]:
    """Local image files decoded as ingest decodes them (EXIF orientation, transparency on white).

    Returns the RGB images, the indices in ``paths`` of the files they came from, and a
    ``{"path", "reason"}`` for each file that could not be read or decoded: one bad file never
    stops the rest.
    """
    images: list[Image.Image] = []
    kept: list[int] = []
    failed: list[dict[str, str]] = []
    for index, path in enumerate(paths):
        result = load_image(SourceItem(uri=str(path)), max_pixels=max_pixels)
        if isinstance(result, DecodedImage):
            images.append(result.image)
            kept.append(index)
        else:
            failed.append({"path": str(path), "reason": result.reason})
    return images, kept, failed
