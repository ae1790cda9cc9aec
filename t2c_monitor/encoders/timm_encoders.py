"""Source encoders: timm models used as feature extractors, built by ``create_source_encoder``.

``timm:NAME[.TAG][@FILE]`` (the grammar is in ``specs``) names a registered timm architecture,
optionally a pretrained tag and optionally a local weights file. Features are the pooled
pre-logits, ``forward_head(forward_features(x), pre_logits=True)``; preprocessing is the model's
own eval transform (``timm.data.resolve_model_data_config``).

Architectures timm does not know may come from plugins: modules named by the
``t2c_monitor.timm_models`` entry points register them with ``@timm.models.register_model``,
and the factory imports those modules when it meets an unknown name (``load_model_plugins``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from t2c_monitor.device import resolve_device
from t2c_monitor.encoders.base import (
    LOAD_ERRORS,
    ClassHead,
    SourceEncoder,
    local_weights_file,
    seeded_init,
    state_dict_sha256,
)
from t2c_monitor.encoders.hub import hub_offline, not_cached_error, timm_weights_cached
from t2c_monitor.encoders.specs import EncoderSpec, refuse_schema, unknown_name_error
from t2c_monitor.errors import ModelLoadError
from t2c_monitor.identity import ModelIdentity

MODEL_PLUGINS = "t2c_monitor.timm_models"


def load_model_plugins() -> list[str]:
    """Import the modules named by the ``t2c_monitor.timm_models`` entry points, so the timm
    architectures they define (with ``@timm.models.register_model``) become known to timm. The
    shapes world's encoder registers this way, and so can a user's own architecture: the loader
    needs no name of theirs or ours."""
    from importlib.metadata import entry_points

    loaded = []
    for point in entry_points(group=MODEL_PLUGINS):
        try:
            point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin stops the load, named, with its error
            raise ModelLoadError(f"The timm model plugin {point.name} ({point.value}) failed to import: {exc}") \
                from exc
        loaded.append(point.value)
    return loaded


def _timm_head_width(state_dict: dict, classifier: str | Sequence[str] | None) -> int:
    """Number of classes of the checkpoint's classifier (0 when it has none)."""
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    for name in names:
        weight = state_dict.get(f"{name}.weight")
        if weight is not None and weight.ndim >= 1:
            return int(weight.shape[0])
    return 0


def _class_labels(model: nn.Module, n: int) -> tuple[str, ...]:
    """Class names from the pretrained config (``label_names``), or ImageNet's when the head is an
    ImageNet one; else ``class 0``, ``class 1``..."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = list(cfg.get("label_names") or [])
    if len(names) != n:
        try:
            from timm.data import ImageNetInfo, infer_imagenet_subset

            subset = infer_imagenet_subset(model)
            names = ImageNetInfo(subset).label_descriptions() if subset else []
        except (ValueError, KeyError, OSError, ImportError):
            names = []
    return tuple(names) if len(names) == n else tuple(f"class {i}" for i in range(n))


def _take_class_head(model: nn.Module) -> ClassHead | None:
    """Copy the model's linear classifier (if it has one), then remove it: the encoder gives pre-logits."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    taken = None
    if isinstance(head, nn.Linear) and head.out_features > 0:
        taken = ClassHead(weight=head.weight.detach().float().cpu().clone(),
                          bias=None if head.bias is None else head.bias.detach().float().cpu().clone(),
                          labels=_class_labels(model, head.out_features))
    model.reset_classifier(0)
    return taken


def _create_timm_model(spec: EncoderSpec) -> tuple[nn.Module, str | None, ClassHead | None]:
    import timm
    from timm.models import get_pretrained_cfg, load_state_dict, split_model_name_tag

    refuse_schema("timm", spec.name)
    arch, tag = split_model_name_tag(spec.name)
    if not timm.is_model(arch):
        load_model_plugins()
    if not timm.is_model(arch):
        raise unknown_name_error(
            "timm", arch, timm.list_models(), "`python -c \"import timm; print(timm.list_models('*resnet*'))\"`"
        )
    known_tags = timm.list_pretrained(f"{arch}.*") if tag else []
    if tag and spec.name not in known_tags:
        tags = [t.split(".", 1)[1] for t in known_tags]
        raise ModelLoadError(
            f"Unknown pretrained tag {tag!r} for timm model {arch}: known tags are "
            f"{', '.join(tags) or 'none'}; or give weights as a local file ('timm:{arch}@PATH')."
        )
    cfg = get_pretrained_cfg(spec.name) if tag else None
    if spec.weights:
        path = local_weights_file(spec.weights, f"timm model {spec.name}")
        try:
            state = load_state_dict(str(path))
            head_cfg = cfg or get_pretrained_cfg(arch)
            n = _timm_head_width(state, head_cfg.classifier if head_cfg else None)
            with seeded_init():
                model = timm.create_model(
                    spec.name,
                    pretrained=True,
                    num_classes=n,
                    pretrained_cfg_overlay=dict(state_dict=state, num_classes=n),
                )
        except LOAD_ERRORS as exc:
            raise ModelLoadError(
                f"Weights file {str(path)!r} cannot be loaded into timm model {spec.name}: {exc}. "
                "Check that the file was saved from this architecture."
            ) from exc
        model.pretrained_cfg.pop("state_dict", None)  # do not keep a second copy of the weights
        return model, str(path), _take_class_head(model)
    if tag:
        if hub_offline():
            cached, where = timm_weights_cached(cfg)
            if not cached:
                raise not_cached_error(
                    f"timm model {spec.name}", where, f"'timm:{spec.name}@/path/weights.safetensors'"
                )
        try:
            model = timm.create_model(spec.name, pretrained=True)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelLoadError(
                f"Weights of timm model {spec.name} could not be fetched or loaded ({exc}): "
                f"the weights must be cached, or given as a local file ('timm:{spec.name}@PATH')."
            ) from exc
        return model, tag, _take_class_head(model)
    with seeded_init():
        return timm.create_model(arch, pretrained=False, num_classes=0), None, None


def create_source_encoder(spec: str | EncoderSpec, device: str | torch.device | None = None) -> SourceEncoder:
    """A timm feature extractor from a spec string (``timm:resnet50.a1_in1k``) or an ``EncoderSpec``."""
    from timm.data import create_transform, resolve_model_data_config

    spec = EncoderSpec.parse(spec) if isinstance(spec, str) else spec
    model, weights, class_head = _create_timm_model(spec)
    data_config = resolve_model_data_config(model)
    preprocess = create_transform(**data_config, is_training=False)
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    identity = ModelIdentity("timm", _timm_identity_name(spec.name, weights), weights, state_dict_sha256(model), dim)
    return SourceEncoder(model, identity, preprocess, resolve_device(device), data_config, class_head)


def _timm_identity_name(name: str, weights: str | None) -> str:
    """The architecture name; the tag is kept only when it chose preprocessing for a local file."""
    from timm.models import split_model_name_tag

    arch, tag = split_model_name_tag(name)
    return name if tag and weights != tag else arch
