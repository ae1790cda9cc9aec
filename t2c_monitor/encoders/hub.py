"""Offline hub resolution: whether a hub tag's weights are already cached, without any network call.

A hub tag whose weights are not in the local cache fails with ``ModelLoadError`` when
``HF_HUB_OFFLINE`` is set (and when the download fails otherwise): cache the weights, or pass a
local file. The checks here look where timm and open_clip themselves would look -- the Hugging
Face cache, torch hub's checkpoint folder, open_clip's ``~/.cache/clip`` -- so a model that loads
offline is exactly one these functions call cached, and the refusal can say where it looked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from t2c_monitor.errors import ModelLoadError


def hub_offline() -> bool:
    """True when the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return constants.HF_HUB_OFFLINE or any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def _hf_cached(repo_id: str, filenames: Sequence[str]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo_id.partition("@")
    return any(isinstance(try_to_load_from_cache(repo_id, name, revision=revision or None), str) for name in filenames)


def not_cached_error(what: str, where: str, example: str) -> ModelLoadError:
    return ModelLoadError(
        f"Weights of {what} are not in the local cache ({where}) and the hub is offline (HF_HUB_OFFLINE): "
        f"the weights must be cached, or given as a local file, e.g. {example}."
    )


def timm_weights_cached(cfg: Any) -> tuple[bool, str]:
    """Whether the weights a timm pretrained cfg points at are in a local cache, and where we looked."""
    if cfg.hf_hub_id:
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        return _hf_cached(cfg.hf_hub_id, names), f"Hugging Face cache, repo {cfg.hf_hub_id}"
    if cfg.url:
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        return target.is_file(), str(target)
    return False, "no hub id or url in the pretrained config"


def clip_tag_cached(model_name: str, tag: str) -> tuple[bool, str]:
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name, tag)
    if "file" in cfg:
        return os.path.isfile(cfg["file"]), cfg["file"]
    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        # the safetensors file open_clip looks for first (pretrained._get_safe_alternatives)
        if filename == HF_WEIGHTS_NAME:
            names = [HF_SAFE_WEIGHTS_NAME, filename]
        elif filename.endswith((".bin", ".pth")):
            names = [filename[:-4] + ".safetensors", filename]
        else:
            names = [filename]
        return _hf_cached(repo_id, names), f"Hugging Face cache, repo {repo_id}"
    target = Path("~/.cache/clip").expanduser() / os.path.basename(cfg.get("url", ""))
    return target.is_file(), str(target)
