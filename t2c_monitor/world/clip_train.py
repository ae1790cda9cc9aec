"""The world's CLIP: an open_clip custom model config trained contrastively on images and captions.

The vision tower is open_clip's ModifiedResNet (layers ``[1, 1, 1, 1]``, width 32): DESIGN section
5 found it learns twice as fast as a tiny ViT on 2 cores. The text tower is open_clip's own
transformer fed by the real open_clip tokenizer, so the trained model is loaded and used by exactly
the code that loads a user's ``ViT-B-32``: register the config JSON with
``open_clip.add_model_config`` and call ``open_clip.create_model(CLIP_MODEL_NAME, pretrained=<weights>)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from t2c_monitor.world.factors import IMAGE_SIZE

CLIP_MODEL_NAME = "t2c-world-clip"
CLIP_WEIGHTS_FILE = "open_clip_model.safetensors"


def clip_model_config(quick: bool) -> dict:
    """The open_clip model config (the JSON ``open_clip.add_model_config`` reads)."""
    return {
        "embed_dim": 128 if not quick else 64,
        "vision_cfg": {"image_size": IMAGE_SIZE, "layers": [1, 1, 1, 1], "width": 16,
                       "patch_size": None},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128 if not quick else 64,
                     "heads": 4, "layers": 2},
    }


@dataclass(frozen=True)
class ClipTraining:
    """Hyperparameters of the contrastive training run."""

    steps: int
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 25  # at most; never more than an eighth of the steps
    clean_first: float = 0.35  # share of the steps that see only effect-free images (a curriculum)
    group_share: float = 0.5  # share of each batch filled with whole contrast groups, when given


def pixels_from_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(n, H, W, 3)`` uint8 -> ``(n, 3, H, W)`` float32 normalised exactly like open_clip's eval transform."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _lr_at(step: int, cfg: ClipTraining) -> float:
    warmup = max(1, min(cfg.warmup, cfg.steps // 8))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_clip(
    model_config: dict,
    images: np.ndarray,
    captions: list[str],
    training: ClipTraining,
    seed: int,
    clean: np.ndarray | None = None,
    groups: tuple[np.ndarray, list[str], int] | None = None,
    progress=None,
) -> tuple[torch.nn.Module, list[float]]:
    """Train a fresh CLIP of ``model_config`` on (image, caption) pairs; returns the model and losses.

    ``clean`` marks the effect-free images: the first ``clean_first`` share of the steps draws only
    from them, so shapes and colours are learned before snow, fog and night hide them (effects are
    plain enough to be learned in the later steps). ``groups`` is ``(images, captions,
    group_size)`` of contrast groups (``generate_contrast_groups``): each batch then fills
    ``group_share`` of its rows with whole groups, hard negatives that differ only in shape and
    blur. ``progress`` is an optional ``callable(step, loss)`` called after every step.
    """
    import open_clip
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(**model_config)
    tokenizer = open_clip.tokenize
    context = model_config["text_cfg"]["context_length"]
    tokens = tokenizer(captions, context_length=context)
    pixels_u8 = torch.from_numpy(images)
    n_grouped, group_size = 0, 1
    if groups is not None:
        group_images, group_captions, group_size = groups
        group_tokens = tokenizer(group_captions, context_length=context)
        group_pixels = torch.from_numpy(group_images)
        n_groups = len(group_captions) // group_size
        n_grouped = int(training.group_share * training.batch_size) // group_size
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": training.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=training.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    generator = torch.Generator().manual_seed(seed)
    everything = torch.arange(len(captions))
    clean_pool = torch.from_numpy(np.flatnonzero(clean)) if clean is not None and np.any(clean) else everything
    losses: list[float] = []
    model.train()
    for step in range(training.steps):
        pool = clean_pool if step < training.clean_first * training.steps else everything
        index = pool[torch.randperm(len(pool), generator=generator)[: training.batch_size - n_grouped * group_size]]
        batch_pixels, batch_tokens = pixels_u8[index], tokens[index]
        if n_grouped:
            chosen = torch.randperm(n_groups, generator=generator)[:n_grouped]
            rows = (chosen[:, None] * group_size + torch.arange(group_size)).reshape(-1)
            batch_pixels = torch.cat([batch_pixels, group_pixels[rows]])
            batch_tokens = torch.cat([batch_tokens, group_tokens[rows]])
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, training)
        image_features = F.normalize(model.encode_image(pixels_from_uint8(batch_pixels)), dim=-1)
        text_features = F.normalize(model.encode_text(batch_tokens), dim=-1)
        # captions repeat (same wording of the same scene): treat identical captions as positives
        same = (batch_tokens[:, None, :] == batch_tokens[None, :, :]).all(dim=-1).float()
        targets = same / same.sum(dim=1, keepdim=True)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        loss = 0.5 * (torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
                      + torch.sum(-targets * F.log_softmax(logits.T, dim=1), dim=1).mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.item()))
        if progress is not None:
            progress(step, losses[-1])
    model.eval()
    return model, losses


def save_clip(model: torch.nn.Module, model_config: dict, out_dir: Path, name: str = CLIP_MODEL_NAME) -> tuple[Path, Path]:
    """Write ``<CLIP_MODEL_NAME>.json`` (the open_clip config) and the safetensors checkpoint."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / f"{name}.json"
    config_path.write_text(json.dumps(model_config, indent=2))
    weights_path = out_dir / CLIP_WEIGHTS_FILE
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(weights_path))
    return config_path, weights_path


def load_clip(config_path: Path, weights_path: Path) -> torch.nn.Module:
    """Load the saved CLIP the way any open_clip user would: register the config, then create_model."""
    import open_clip

    open_clip.add_model_config(config_path)
    return open_clip.create_model(config_path.stem, pretrained=str(weights_path), device="cpu").eval()
