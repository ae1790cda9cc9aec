"""The world's source encoder: a small timm ResNet trained on shape labels only.

It stands for a user's deployed model: it was taught the five shapes and nothing else, so
colours, backgrounds, sizes and effects are concepts it never learned by name -- exactly what
text-to-concept must recover through the aligner.

The architecture ``t2c_world_resnet`` is a registered timm model (``resnet10t``'s block layout at
a quarter of its width, with a 64 px pretrained config), so the saved safetensors load through
timm's own factory once this module is imported::

    import t2c_monitor.world.source_model  # registers the architecture with timm
    timm.create_model("t2c_world_resnet", pretrained=True,
                      pretrained_cfg_overlay=dict(file=path), num_classes=5)

and ``resolve_model_data_config`` gives the matching eval transform (64 px, crop 1.0, ImageNet
mean/std), so loaders need no extra arguments. ``source.json`` next to the weights records the
same facts for other loaders.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet

from t2c_monitor.world.factors import FACTORS, IMAGE_SIZE

SOURCE_ARCH = "t2c_world_resnet"
SOURCE_WEIGHTS_FILE = "model.safetensors"
SOURCE_CONFIG_FILE = "source.json"
ARCH_KWARGS = {"block": BasicBlock, "layers": (1, 1, 1, 1), "channels": (32, 64, 128, 512), "stem_width": 16,
               "stem_type": "deep_tiered", "avg_down": True}
PRETRAINED_CFG = {
    "num_classes": len(FACTORS["shape"]), "input_size": (3, IMAGE_SIZE, IMAGE_SIZE), "pool_size": (2, 2),
    "crop_pct": 1.0, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
    "first_conv": "conv1.0", "classifier": "fc", "license": "apache-2.0", "label_names": tuple(FACTORS["shape"]),
}

default_cfgs = generate_default_cfgs({SOURCE_ARCH: dict(url="", **PRETRAINED_CFG)})


@register_model
def t2c_world_resnet(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-10-T layout at a quarter width for 64 px shapes-world images (512-d pooled features)."""
    kwargs.setdefault("num_classes", PRETRAINED_CFG["num_classes"])
    return build_model_with_cfg(ResNet, SOURCE_ARCH, pretrained, **dict(ARCH_KWARGS, **kwargs))


@dataclass(frozen=True)
class SourceTraining:
    """Hyperparameters of the shape-classification run."""

    steps: int
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    clean_first: float = 0.5  # share of the steps that see only effect-free images (a curriculum)


def pixels_from_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(n, 64, 64, 3)`` uint8 -> normalised ``(n, 3, 64, 64)``, exactly timm's eval transform at 64 px."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def train_source(images: np.ndarray, shape_labels: np.ndarray, training: SourceTraining, seed: int,
                 clean: np.ndarray | None = None, progress=None) -> tuple[torch.nn.Module, list[float]]:
    """Train a fresh ``t2c_world_resnet`` to classify shapes (and nothing else).

    ``clean`` marks the effect-free images; the first ``clean_first`` share of the steps draws
    only from them. From scratch, the silhouettes are found within a hundred steps on clean
    images but hardly at all when snow, fog and night are mixed in from the start.
    """
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(SOURCE_ARCH, pretrained=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    pixels_u8, labels = torch.from_numpy(images), torch.from_numpy(shape_labels).long()
    pools = _curriculum_pools(len(labels), clean)
    losses: list[float] = []
    model.train()
    for step in range(training.steps):
        pool = pools[0] if step < training.clean_first * training.steps else pools[1]
        index = pool[torch.randint(0, len(pool), (training.batch_size,), generator=generator)]
        for group in optimizer.param_groups:
            group["lr"] = training.lr * 0.5 * (1.0 + math.cos(math.pi * step / training.steps))
        loss = F.cross_entropy(model(pixels_from_uint8(pixels_u8[index])), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
        if progress is not None:
            progress(step, losses[-1])
    model.eval()
    return model, losses


def _curriculum_pools(n: int, clean: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices of clean images, indices of all images); all images twice when nothing is marked clean."""
    everything = torch.arange(n)
    if clean is None or not np.any(clean):
        return everything, everything
    return torch.from_numpy(np.flatnonzero(clean)), everything


def save_source(model: torch.nn.Module, out_dir: Path, metrics: dict) -> tuple[Path, Path]:
    """Write the safetensors weights and ``source.json`` (architecture, classes, how to load)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / SOURCE_WEIGHTS_FILE
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(weights))
    config = out_dir / SOURCE_CONFIG_FILE
    config.write_text(json.dumps({
        "architecture": SOURCE_ARCH,
        "register_with": "import t2c_monitor.world.source_model",
        "num_classes": PRETRAINED_CFG["num_classes"],
        "labels": list(FACTORS["shape"]),
        "model_kwargs": {k: v for k, v in ARCH_KWARGS.items() if k != "block"} | {"block": "BasicBlock"},
        "pretrained_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in PRETRAINED_CFG.items()},
        "metrics": metrics,
    }, indent=2))
    return weights, config


def load_source(weights: Path) -> torch.nn.Module:
    """Load saved weights through timm's factory (the path a user's model takes)."""
    import timm

    return timm.create_model(SOURCE_ARCH, pretrained=True, pretrained_cfg_overlay={"file": str(weights)},
                             num_classes=PRETRAINED_CFG["num_classes"]).eval()
