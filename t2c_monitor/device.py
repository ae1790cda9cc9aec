"""Choosing the torch device and the fast-path options that go with it."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from t2c_monitor.errors import ConfigError
from t2c_monitor.settings import get_settings


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """Turn a device setting into a ``torch.device``; ``auto`` picks CUDA when present."""
    name = get_settings().device if name is None else name
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"Unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N' (T2C_DEVICE).") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device {name!r} asked for, but CUDA is not available here: set T2C_DEVICE=auto or cpu.")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op on CPU, where bf16 is slower and changes results."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_channels_last(device: torch.device, image_module: nn.Module) -> bool:
    """Channels-last memory for a convolutional image tower on CUDA, where it pays off.

    A tower counts as convolutional with more than one 2-d convolution (a ViT has only its patch
    embedding). On CPU the default layout is kept.
    """
    return device.type == "cuda" and sum(isinstance(m, nn.Conv2d) for m in image_module.modules()) > 1
