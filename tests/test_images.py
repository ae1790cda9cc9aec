"""Contracts of image decoding: every accepted format gives the right RGB pixels, and every kind
of bad input gives a FailedImage with a stable category instead of an exception.

All test images are written with Pillow (or by hand, for the decompression bomb) into tmp_path.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2c_monitor.errors import ImageDecodeError
from t2c_monitor.images import (
    ACCEPTED_FORMATS,
    DEFAULT_MAX_PIXELS,
    FAILURE_CATEGORIES,
    DecodedImage,
    FailedImage,
    decode_image,
    failure_category,
    load_image,
)
from t2c_monitor.sources import SourceItem, resolve_source

RED, BLUE, WHITE = (200, 30, 40), (20, 40, 220), (255, 255, 255)


def _save(im: Image.Image, path: Path, fmt: str | None = None, **kwargs: object) -> SourceItem:
    im.save(path, fmt, **kwargs)
    return SourceItem(uri=str(path))


def _ok(result: DecodedImage | FailedImage) -> DecodedImage:
    assert isinstance(result, DecodedImage), getattr(result, "reason", result)
    assert result.image.mode == "RGB"
    assert result.image.size == (result.width, result.height)
    return result


def _failed(result: DecodedImage | FailedImage, category: str) -> FailedImage:
    assert isinstance(result, FailedImage), f"expected a {category!r} failure, got a decoded image"
    assert result.reason.startswith(category + ": "), result.reason
    assert failure_category(result.reason) == category
    return result


def _close(pixel: tuple[int, ...], expected: tuple[int, ...], tol: int) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims width x height RGB pixels, with almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("fmt", "suffix", "tol"),
    [("JPEG", ".jpg", 8), ("PNG", ".png", 0), ("WEBP", ".webp", 8), ("BMP", ".bmp", 0),
     ("GIF", ".gif", 0), ("TIFF", ".tiff", 0)],
)
def test_every_accepted_format_decodes_to_the_right_pixels(tmp_path: Path, fmt: str, suffix: str, tol: int) -> None:
    im = Image.new("RGB", (48, 32), RED)
    im.paste(BLUE, (24, 0, 48, 32))
    item = _save(im, tmp_path / f"img{suffix}", fmt)
    result = _ok(load_image(item))
    assert result.format == fmt and fmt in ACCEPTED_FORMATS
    assert (result.width, result.height) == (48, 32)
    assert _close(result.image.getpixel((5, 16)), RED, tol)
    assert _close(result.image.getpixel((40, 16)), BLUE, tol)
    raw = (tmp_path / f"img{suffix}").read_bytes()
    assert result.sha256 == hashlib.sha256(raw).hexdigest() and result.n_bytes == len(raw)
    assert result.uri == item.uri


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)]
    item = _save(frames[0], tmp_path / "anim.gif", "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    assert _ok(load_image(item)).image.getpixel((8, 8)) == RED


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), RED)
    im.paste(BLUE, (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    item = _save(im, tmp_path / "rotated.jpg", "JPEG", exif=exif, quality=95)
    result = _ok(load_image(item))
    assert (result.width, result.height) == (20, 40)
    # turned clockwise, the left (red) half ends up on top
    assert _close(result.image.getpixel((10, 5)), RED, 8)
    assert _close(result.image.getpixel((10, 35)), BLUE, 8)


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    im = Image.new("P", (8, 8), 1)
    im.putpalette([0, 0, 0, *RED] + [0, 0, 0] * 254)
    im.putpixel((0, 0), 0)  # index 0 is transparent black
    result = _ok(load_image(_save(im, tmp_path / "pal.png", "PNG", transparency=0)))
    assert result.image.getpixel((0, 0)) == WHITE
    assert result.image.getpixel((4, 4)) == RED
    opaque = _ok(load_image(_save(im, tmp_path / "pal_opaque.png", "PNG")))
    assert opaque.image.getpixel((0, 0)) == (0, 0, 0)


def test_rgba_and_la_are_composited_on_white_not_dropped(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((1, 1), (255, 0, 0, 128))  # half-transparent red
    rgba.putpixel((2, 2), (*BLUE, 255))
    result = _ok(load_image(_save(rgba, tmp_path / "rgba.png", "PNG")))
    assert result.image.getpixel((0, 0)) == WHITE
    assert _close(result.image.getpixel((1, 1)), (255, 127, 127), 1)
    assert result.image.getpixel((2, 2)) == BLUE
    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((1, 1), (50, 255))
    la_result = _ok(load_image(_save(la, tmp_path / "la.png", "PNG")))
    assert la_result.image.getpixel((0, 0)) == WHITE and la_result.image.getpixel((1, 1)) == (50, 50, 50)


def test_grayscale_and_cmyk_become_rgb(tmp_path: Path) -> None:
    gray = _ok(load_image(_save(Image.new("L", (6, 6), 77), tmp_path / "gray.png", "PNG")))
    assert gray.image.getpixel((3, 3)) == (77, 77, 77)
    bilevel = _ok(load_image(_save(Image.new("1", (6, 6), 1), tmp_path / "bw.bmp", "BMP")))
    assert bilevel.image.getpixel((3, 3)) == WHITE
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    assert _ok(load_image(_save(cmyk, tmp_path / "cmyk.tiff", "TIFF"))).image.getpixel((4, 4)) == (255, 0, 0)
    jpeg = _ok(load_image(_save(cmyk, tmp_path / "cmyk.jpg", "JPEG", quality=95)))
    assert _close(jpeg.image.getpixel((4, 4)), (255, 0, 0), 8)


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", ".png"), ("TIFF", ".tif")])
def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path, fmt: str, suffix: str) -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    result = _ok(load_image(_save(im, tmp_path / f"deep{suffix}", fmt)))
    # clipping would turn everything above 255 white; scaling keeps the ramp
    assert [result.image.getpixel((x, 0))[0] for x in range(4)] == [0, 1, 128, 255]


def test_32_bit_integer_and_float_images(tmp_path: Path) -> None:
    in_range = Image.fromarray(np.array([[0, 65535, 1000]], dtype=np.int32))
    assert in_range.mode == "I"
    result = _ok(load_image(_save(in_range, tmp_path / "int.tif", "TIFF")))
    assert [result.image.getpixel((x, 0))[0] for x in range(3)] == [0, 255, 4]
    out_of_range = Image.fromarray(np.array([[-5, 70000]], dtype=np.int32))
    _failed(load_image(_save(out_of_range, tmp_path / "wide.tif", "TIFF")), "unsupported")
    floats = Image.fromarray(np.array([[0.5, 1.0]], dtype=np.float32))
    _failed(load_image(_save(floats, tmp_path / "float.tif", "TIFF")), "unsupported")


# ----------------------------------------------------------------------------- bad inputs


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    failed = _failed(load_image(SourceItem(uri=str(tmp_path / "empty.png"))), "empty file")
    assert failed.n_bytes == 0 and failed.sha256 == hashlib.sha256(b"").hexdigest()


def test_truncated_jpeg_fails_at_decode_time(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(noise).save(whole, "JPEG")
    data = whole.read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    failed = _failed(load_image(SourceItem(uri=str(tmp_path / "half.jpg"))), "truncated")
    assert failed.n_bytes == len(data) // 2
    # a truncated PNG too
    Image.fromarray(noise).save(tmp_path / "whole.png")
    png = (tmp_path / "whole.png").read_bytes()
    with pytest.raises(ImageDecodeError, match="^truncated: "):
        decode_image(png[: len(png) // 2], "half.png")


def test_text_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("this is a text file, not a photo\n")
    failed = _failed(load_image(SourceItem(uri=str(tmp_path / "notes.jpg"))), "not an image")
    assert "b'this is '" in failed.reason


def test_other_pillow_formats_are_refused_as_unsupported(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), RED).save(tmp_path / "img.pcx", "PCX")
    failed = _failed(load_image(SourceItem(uri=str(tmp_path / "img.pcx"))), "unsupported")
    assert "PCX" in failed.reason


def test_decompression_bomb_header_is_refused_fast(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(_bomb_png(100_000, 100_000))
    start = time.perf_counter()
    failed = _failed(load_image(SourceItem(uri=str(tmp_path / "bomb.png"))), "too large")
    assert time.perf_counter() - start < 0.5
    assert "100000x100000 = 10.0 gigapixels" in failed.reason
    assert "64 megapixels" in failed.reason and "decompression bomb" in failed.reason
    # a text chunk that inflates past Pillow's safety limit is a bomb too
    signature_and_header = _bomb_png(4, 4)[:33]
    text_bomb = signature_and_header + _png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"\x00" * 4_000_000))
    with pytest.raises(ImageDecodeError, match="^too large: "):
        decode_image(text_bomb + _bomb_png(4, 4)[33:], "text.png")
    # the limit is a parameter: a small image over a small limit is refused the same way
    with pytest.raises(ImageDecodeError, match=r"^too large: image is 20x20 = 400 pixels"):
        decode_image(_bomb_png(20, 20), "x.png", max_pixels=399)


def test_pillow_global_pixel_limit_neither_decides_nor_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our limit alone decides: Pillow's process-wide MAX_IMAGE_PIXELS is not consulted."""
    Image.new("RGB", (64, 64), RED).save(tmp_path / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = _ok(load_image(SourceItem(uri=str(tmp_path / "ok.png"))))
    assert result.image.getpixel((1, 1)) == RED
    assert DEFAULT_MAX_PIXELS == 64_000_000


def test_unreadable_paths(tmp_path: Path) -> None:
    failed = _failed(load_image(SourceItem(uri=str(tmp_path / "missing.png"))), "unreadable")
    assert "no such file" in failed.reason and failed.sha256 is None and failed.n_bytes is None
    _failed(load_image(SourceItem(uri=str(tmp_path))), "unreadable")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root reads files whatever their permissions, so chmod 000 cannot fail")
def test_permission_denied_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    try:
        failed = _failed(load_image(SourceItem(uri=str(path))), "unreadable")
        assert "permission denied" in failed.reason
    finally:
        path.chmod(0o644)


def test_unknown_protocol_and_manifest_row_without_uri_fail_without_reading(tmp_path: Path) -> None:
    [item] = resolve_source(["foo://bucket/x.png"])
    failed = _failed(load_image(item), "unknown protocol")
    assert "'foo'" in failed.reason and "install" in failed.reason
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"label": "cat"}\n')
    [row] = resolve_source(manifest)
    failed = _failed(load_image(row), "missing uri")
    assert "manifest row 1 has no uri" in failed.reason


def test_max_bytes_refuses_big_files_before_decoding(tmp_path: Path) -> None:
    item = _save(Image.new("RGB", (32, 32), RED), tmp_path / "a.bmp", "BMP")
    failed = _failed(load_image(item, max_bytes=100), "too large")
    assert "over the limit of 100 bytes" in failed.reason
    _ok(load_image(item, max_bytes=10_000))


def test_every_reason_has_a_known_category() -> None:
    assert failure_category("truncated: image file is truncated") == "truncated"
    assert failure_category("missing uri: manifest row 3 has no uri") == "missing uri"
    assert failure_category("something new") == "corrupt"
    assert len(set(FAILURE_CATEGORIES)) == len(FAILURE_CATEGORIES)


def test_load_image_from_threads_matches_sequential(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    items = []
    for i in range(12):
        pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        fmt, suffix = [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")][i % 3]
        items.append(_save(Image.fromarray(pixels), tmp_path / f"{i}{suffix}", fmt))
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    (tmp_path / "bomb.png").write_bytes(_bomb_png(100_000, 100_000))
    items += [SourceItem(uri=str(tmp_path / "bad.jpg")), SourceItem(uri=str(tmp_path / "bomb.png"))]

    def summary(result: DecodedImage | FailedImage) -> tuple[str, str]:
        if isinstance(result, FailedImage):
            return result.uri, result.reason
        return result.uri, hashlib.sha256(result.image.tobytes()).hexdigest()

    sequential = [summary(load_image(i)) for i in items]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = [summary(r) for r in pool.map(load_image, items * 3)]
    assert threaded == sequential * 3
    assert sum(isinstance(load_image(i), FailedImage) for i in items) == 2
