"""CLIP models: open_clip image and text towers, built by ``create_clip_model``.

``open_clip:NAME[@PRETRAINED]`` (the grammar is in ``specs``) names a built-in architecture or
the path of a custom model config JSON (open_clip's format: ``embed_dim``, ``vision_cfg``,
``text_cfg``), and a pretrained tag or a local checkpoint; without weights the model is a seeded
random init. A custom config is registered with open_clip under its file stem, and refused when
open_clip already knows a different config by that name. Images get CLIP's own transform
(resized, cropped, normalised with the model's mean/std); texts get the model's own tokenizer
(``open_clip.get_tokenizer``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from t2c_monitor.device import resolve_device
from t2c_monitor.encoders.base import LOAD_ERRORS, ClipModel, local_weights_file, seeded_init, state_dict_sha256
from t2c_monitor.encoders.hub import clip_tag_cached, hub_offline, not_cached_error
from t2c_monitor.encoders.specs import ClipSpec, refuse_schema, unknown_name_error
from t2c_monitor.errors import ModelLoadError
from t2c_monitor.identity import ModelIdentity
from t2c_monitor.textfiles import clip, read_text


def _register_clip_config(path: Path) -> str:
    """Make a custom open_clip model config JSON known to open_clip; return the name it is known by."""
    import open_clip

    try:
        cfg = json.loads(read_text(path, what="open_clip model config"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or nesting deeper than json reads
        raise ModelLoadError(f"Cannot read open_clip model config {str(path)!r}: {clip(str(exc))}.") from None
    if not isinstance(cfg, dict) or not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ModelLoadError(
            f"{str(path)!r} is not an open_clip model config: it needs the keys "
            "embed_dim, vision_cfg and text_cfg (see open_clip/model_configs/*.json)."
        )
    name = path.stem
    known = open_clip.get_model_config(name)
    if known is None:
        open_clip.add_model_config(path)
    elif known != cfg:
        raise ModelLoadError(
            f"open_clip already knows a different model config named {name!r}; "
            f"rename {str(path)!r} to a unique file name."
        )
    return name


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text or "/" in text or Path(text).suffix in {".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt"}
    )


def _create_open_clip_model(spec: ClipSpec) -> tuple[nn.Module, Callable, str, str, str | None]:
    """(model, eval transform, open_clip name, identity name, weights reference)."""
    import open_clip
    from open_clip.pretrained import is_pretrained_cfg, list_pretrained_tags_by_model

    refuse_schema("open_clip", spec.name)
    if spec.name.endswith(".json") or os.path.isfile(os.path.expanduser(spec.name)):
        config_path = Path(spec.name).expanduser().resolve()
        if not config_path.is_file():
            raise ModelLoadError(
                f"open_clip model config {spec.name!r} does not exist: give the path of a JSON "
                "file with embed_dim, vision_cfg and text_cfg."
            )
        model_name, identity_name = _register_clip_config(config_path), str(config_path)
    else:
        model_name = identity_name = spec.name
        if open_clip.get_model_config(model_name) is None:
            raise unknown_name_error(
                "open_clip",
                model_name,
                open_clip.list_models(),
                '`python -c "import open_clip; print(open_clip.list_models())"`, '
                "or give the path of a model config JSON",
            )
    weights: str | None = None
    pretrained: str | None = None
    from_tag = bool(spec.pretrained) and is_pretrained_cfg(model_name, spec.pretrained)
    if from_tag:
        if hub_offline():
            cached, where = clip_tag_cached(model_name, spec.pretrained)
            if not cached:
                raise not_cached_error(
                    f"open_clip model {model_name} ({spec.pretrained})",
                    where,
                    f"'open_clip:{model_name}@/path/open_clip_model.safetensors'",
                )
        pretrained = weights = spec.pretrained
    elif spec.pretrained:
        if not _looks_like_path(spec.pretrained):
            tags = list_pretrained_tags_by_model(model_name)
            raise ModelLoadError(
                f"Unknown pretrained tag {spec.pretrained!r} for open_clip model {model_name}: "
                f"known tags are {', '.join(tags) or 'none'}; or give a local checkpoint path."
            )
        pretrained = weights = str(local_weights_file(spec.pretrained, f"open_clip model {model_name}"))
    try:
        with seeded_init():
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, pretrained_text=False, device="cpu"
            )
    except LOAD_ERRORS as exc:
        fix = (
            "the weights must be cached, or given as a local file"
            if from_tag
            else "check that the checkpoint was saved from this architecture"
        )
        raise ModelLoadError(
            f"open_clip model {spec} could not be created or its weights loaded ({exc}): {fix}."
        ) from exc
    return model, preprocess, model_name, identity_name, weights


def create_clip_model(spec: str | ClipSpec, device: str | torch.device | None = None) -> ClipModel:
    """An open_clip model from a spec string (``open_clip:ViT-B-32@laion2b_s34b_b79k``) or a ``ClipSpec``."""
    import open_clip

    spec = ClipSpec.parse(spec) if isinstance(spec, str) else spec
    model, preprocess, model_name, identity_name, weights = _create_open_clip_model(spec)
    dim = int(open_clip.get_model_config(model_name)["embed_dim"])
    identity = ModelIdentity("open_clip", identity_name, weights, state_dict_sha256(model), dim)
    return ClipModel(model, identity, preprocess, resolve_device(device), open_clip.get_tokenizer(model_name))
