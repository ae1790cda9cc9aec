"""A tiny but real monitor (the layout of tests/conftest.py's tiny_monitor_dir)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
TINY_BANK = "name: tiny\nversion: 1\ntemplates: plain\nconcepts:\n  - red\n  - green\n  - blue\n" \
            "  - at night | a dark picture\n  - a bright picture\n"
HOSTILE_CONCEPTS = ("</script><t2cinj2>", "<img src=x onerror=t2cinj3()>", "<script>t2cinj6()</script>",
                    "' onmouseover='t2cinj5", "[bold]t2cmk1[/bold]", "[/]", "grass", "[x](javascript:t2cinj11)",
                    "<!channel> <http://evil.example|click>", "{{ 7*7 }} {% raw %}")


def write_png(path: Path, color: tuple[int, int, int], size: int = 32, seed: int = 0) -> Path:
    """A real PNG: a coloured square on noise, so every file has different bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = color
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_images(folder: Path, n: int, seed: int = 0, *, dark: bool = False,
                 names: list[str] | None = None) -> list[Path]:
    import numpy as np

    rng = np.random.default_rng(seed)
    top = 25 if dark else 256
    names = names or [f"img-{i:04d}.png" for i in range(n)]
    return [write_png(folder / names[i % len(names)].replace("NNNN", f"{i:04d}"),
                      tuple(int(c) for c in rng.integers(0, top, 3)), seed=seed * 100_000 + i) for i in range(n)]


def build_tiny_models(root: Path) -> Path:
    """Encoder, CLIP, aligner and bank of a monitor named ``tiny`` saved under ``root`` the way users save
    theirs, with ``monitors.yaml`` (about ten seconds on two cores). Returns ``root``."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from t2c_monitor.aligner import fit_on_images
    from t2c_monitor.encoders import create_clip_model, create_source_encoder

    root.mkdir(parents=True, exist_ok=True)
    config = root / "t2c_fuzz_tiny_clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    encoder = create_source_encoder("timm:test_vit", device="cpu")
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, str(root / "encoder.safetensors"))
    torch.save(create_clip_model(f"open_clip:{config}", device="cpu").model.state_dict(), root / "clip.pt")
    encoder = create_source_encoder(f"timm:test_vit@{root / 'encoder.safetensors'}", device="cpu")
    clip = create_clip_model(f"open_clip:{config}@{root / 'clip.pt'}", device="cpu")
    images = [Image.open(p).convert("RGB") for p in write_images(root / "train", 96, seed=1)]
    fit_on_images(encoder, clip, images, ridge=1e-3).save(root / "aligner")
    (root / "bank.yaml").write_text(TINY_BANK)
    (root / "monitors.yaml").write_text(
        "monitors:\n  - name: tiny\n    encoder: timm:test_vit@encoder.safetensors\n"
        f"    clip: open_clip:{config}@clip.pt\n    aligner: aligner\n    bank: bank.yaml\n")
    return root


def monitor_document(models: Path, **sections: Any) -> dict[str, Any]:
    """The monitors document of the tiny models in ``models`` with absolute paths, ``sections`` merged in
    (a top-level ``channels`` too)."""
    import yaml

    document = yaml.safe_load((models / "monitors.yaml").read_text())
    monitor = document["monitors"][0]
    for key in ("aligner", "bank"):
        monitor[key] = str(models / monitor[key])
    monitor["encoder"] = monitor["encoder"].replace("@encoder.safetensors", f"@{models / 'encoder.safetensors'}")
    monitor["clip"] = monitor["clip"].replace("@clip.pt", f"@{models / 'clip.pt'}")
    channels = sections.pop("channels", None)
    monitor.update(sections)
    if channels:
        document["channels"] = channels
    return document
