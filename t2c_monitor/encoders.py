"""Vision encoders (timm) and CLIP models (open_clip), each created by one factory from a spec.

A spec is ``KIND:NAME[@WEIGHTS]``; the kind prefix may be left out when the factory already
says which kind it builds.

``timm:NAME[.TAG][@FILE]`` -- a source encoder (``create_source_encoder``)
    ``timm:resnet50.a1_in1k``             weights of the hub tag ``a1_in1k`` (must be cached when offline)
    ``timm:resnet10t``                    random init (seeded, so the same spec gives the same weights)
    ``timm:resnet10t@/path/w.safetensors`` a local safetensors file or a ``weights_only`` torch checkpoint
    ``timm:resnet50.a1_in1k@/path/w.pt``  a local file, with the preprocessing of the tag's config
    Features are the pooled pre-logits, ``forward_head(forward_features(x), pre_logits=True)``;
    preprocessing is the model's own eval transform (``timm.data.resolve_model_data_config``).

``open_clip:NAME[@PRETRAINED]`` -- a CLIP model (``create_clip_model``)
    ``open_clip:ViT-B-32@laion2b_s34b_b79k``   a built-in architecture with a pretrained tag
    ``open_clip:ViT-B-32@/path/ckpt.pt``       a built-in architecture with a local checkpoint
    ``open_clip:/path/cfg.json@/path/ckpt.pt`` a custom model config (open_clip's JSON format:
                                               ``embed_dim``, ``vision_cfg``, ``text_cfg``)
    ``open_clip:/path/cfg.json``               the same architecture, random init (seeded)
    Images get CLIP's own transform (resized, cropped, normalised with the model's mean/std);
    texts get the model's own tokenizer (``open_clip.get_tokenizer``).

Everything before the first ``@`` is the name and everything after it the weights; a path that
itself contains ``@`` must be given through ``EncoderSpec`` / ``ClipSpec``. Names are resolved
against the installed registries without any network call. A hub tag whose weights are not in
the local cache fails with ``ModelLoadError`` when ``HF_HUB_OFFLINE`` is set (and when the
download fails otherwise): cache the weights, or pass a local file.

Every model reports its output width ``dim`` and a ``ModelIdentity`` whose ``weights_sha256`` is
a hash of the loaded state dict, so the same weights are recognised whatever file they came from.
Encoding runs batched under ``torch.inference_mode`` on the configured device, with bf16
autocast and channels-last memory for convolutional towers on CUDA.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from t2c_monitor.device import autocast, resolve_device, use_channels_last
from t2c_monitor.errors import ConfigError, ModelLoadError
from t2c_monitor.identity import ModelIdentity

KINDS = ("timm", "open_clip")
RANDOM_INIT_SEED = 0


# ----------------------------------------------------------------------------------------------
# identities and specs


def _split_spec(text: str, kind: str) -> tuple[str, str | None]:
    """``[kind:]name[@weights]`` -> (name, weights); rejects another kind's prefix."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"Empty model spec {text!r}: write e.g. '{kind}:NAME' or '{kind}:NAME@WEIGHTS'.")
    text = text.strip()
    prefix, sep, rest = text.partition(":")
    if sep and prefix in KINDS:
        if prefix != kind:
            raise ConfigError(f"Spec {text!r} names a {prefix} model where a {kind} model is needed.")
        text = rest
    if os.path.isfile(os.path.expanduser(text)):
        return text, None
    name, sep, weights = text.partition("@")
    if not name or (sep and not weights):
        raise ConfigError(f"Malformed model spec {text!r}: write '{kind}:NAME' or '{kind}:NAME@WEIGHTS'.")
    return name, weights or None


@dataclass(frozen=True)
class EncoderSpec:
    """A timm source encoder: ``name`` (optionally ``arch.tag``) and an optional local weights file."""

    name: str
    weights: str | None = None

    @classmethod
    def parse(cls, text: str) -> EncoderSpec:
        return cls(*_split_spec(text, "timm"))

    def __str__(self) -> str:
        return f"timm:{self.name}" + (f"@{self.weights}" if self.weights else "")


@dataclass(frozen=True)
class ClipSpec:
    """An open_clip model: a built-in name or config JSON path, and a pretrained tag or checkpoint path."""

    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, text: str) -> ClipSpec:
        return cls(*_split_spec(text, "open_clip"))

    def __str__(self) -> str:
        return f"open_clip:{self.name}" + (f"@{self.pretrained}" if self.pretrained else "")


# ----------------------------------------------------------------------------------------------
# the shared image API


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over sorted parameter/buffer names, dtypes, shapes and bytes: stable across save/load."""
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def batch_starts(n: int, batch_size: int, description: str, progress: bool) -> Iterator[int]:
    """Start offsets of batches, with a progress bar on stderr when asked for."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, n, batch_size)
    if not progress:
        yield from starts
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(starts, description=description, console=Console(stderr=True), total=len(starts))


class _ImageTower:
    """Shared image API of source encoders and CLIP models: preprocess, then encode in batches."""

    identity: ModelIdentity
    device: torch.device
    preprocess: Callable[[Image.Image], torch.Tensor]

    def __init__(self, model: nn.Module, identity: ModelIdentity, preprocess: Callable, device: torch.device):
        self.model = model.eval().to(device)
        self.identity = identity
        self.preprocess = preprocess
        self.device = device
        self._channels_last = use_channels_last(device, self._image_module())
        if self._channels_last:
            self._image_module().to(memory_format=torch.channels_last)

    @property
    def dim(self) -> int:
        return self.identity.dim

    def _image_module(self) -> nn.Module:
        return self.model

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels ``(n, 3, H, W)`` -> embeddings ``(n, dim)`` float32 on CPU."""
        if pixels.ndim != 4:
            raise ValueError(f"pixels must be (n, 3, H, W), got shape {tuple(pixels.shape)}")
        x = pixels.to(self.device, non_blocking=True)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device):
            out = self._forward_images(x)
        return out.float().cpu()

    def encode_images(
        self, images: Sequence[Image.Image], batch_size: int = 64, progress: bool = False
    ) -> torch.Tensor:
        """PIL images -> embeddings ``(n, dim)``, preprocessed with this model's own transform."""
        out = torch.empty((len(images), self.dim), dtype=torch.float32)
        for start in batch_starts(len(images), batch_size, f"encoding images ({self.identity.name})", progress):
            chunk = images[start : start + batch_size]
            out[start : start + len(chunk)] = self.encode(torch.stack([self.preprocess(im) for im in chunk]))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity}, device={self.device})"


class SourceEncoder(_ImageTower):
    """A timm model used as a feature extractor: pooled pre-logits features.

    ``data_config`` is the model's resolved timm data config (input size, mean, std, crop),
    the one ``preprocess`` was built from.
    """

    def __init__(
        self, model: nn.Module, identity: ModelIdentity, preprocess: Callable, device: torch.device, data_config: dict
    ):
        super().__init__(model, identity, preprocess, device)
        self.data_config = data_config

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True)


class ClipModel(_ImageTower):
    """An open_clip model: the image tower (same API as ``SourceEncoder``) and the text tower."""

    def __init__(
        self, model: nn.Module, identity: ModelIdentity, preprocess: Callable, device: torch.device, tokenizer: Callable
    ):
        super().__init__(model, identity, preprocess, device)
        self.tokenizer = tokenizer

    def _image_module(self) -> nn.Module:
        return self.model.visual

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels, normalize=False)

    @property
    def context_length(self) -> int:
        """Most tokens (start and end tokens included) one text may have before it is truncated."""
        return int(self.tokenizer.context_length)

    def count_tokens(self, text: str) -> int:
        """Tokens this model's tokenizer makes of ``text``, start and end tokens included."""
        tok = self.tokenizer
        if hasattr(tok, "sot_token_id") and hasattr(tok, "encode"):  # open_clip's SimpleTokenizer
            return len(tok.encode(text)) + 2
        if hasattr(tok, "tokenizer"):  # HFTokenizer wrapping a transformers tokenizer
            return len(tok.tokenizer(tok.clean_fn(text))["input_ids"])
        raise ModelLoadError(f"Cannot count tokens with tokenizer {type(tok).__name__} of {self.identity.name}.")

    def encode_text(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """Texts -> text embeddings ``(n, dim)`` float32 on CPU, NOT normalised."""
        texts = list(texts)
        out = torch.empty((len(texts), self.dim), dtype=torch.float32)
        for start in batch_starts(len(texts), batch_size, f"encoding texts ({self.identity.name})", progress):
            chunk = texts[start : start + batch_size]
            tokens = self.tokenizer(chunk).to(self.device)
            with torch.inference_mode(), autocast(self.device):
                out[start : start + len(chunk)] = self.model.encode_text(tokens, normalize=False).float().cpu()
        return out


# ----------------------------------------------------------------------------------------------
# loading helpers shared by both kinds


def hub_offline() -> bool:
    """True when the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return constants.HF_HUB_OFFLINE or any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def _hf_cached(repo_id: str, filenames: Sequence[str]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo_id.partition("@")
    return any(isinstance(try_to_load_from_cache(repo_id, name, revision=revision or None), str) for name in filenames)


def _not_cached_error(what: str, where: str, example: str) -> ModelLoadError:
    return ModelLoadError(
        f"Weights of {what} are not in the local cache ({where}) and the hub is offline (HF_HUB_OFFLINE): "
        f"the weights must be cached, or given as a local file, e.g. {example}."
    )


def _local_file(path: str, what: str) -> Path:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ModelLoadError(
            f"Weights file {path!r} for {what} does not exist: give the path of a "
            ".safetensors file or a torch checkpoint (or a hub tag)."
        )
    return resolved


def _refuse_schema(kind: str, name: str) -> None:
    """``hf-hub:`` / ``local-dir:`` names fetch configs by themselves; we load only what we can check."""
    if name.startswith(("hf-hub:", "local-dir:", "hf_hub:")):
        raise ModelLoadError(
            f"{kind} model name {name!r} uses a hub/local-dir schema, which is not supported: name the "
            f"architecture and pass its weights file, e.g. '{kind}:ARCH@/path/weights.safetensors'"
            + (" (or a model config JSON: 'open_clip:/path/cfg.json@/path/ckpt.pt')." if kind == "open_clip" else ".")
        )


def _unknown_name_error(kind: str, name: str, known: Sequence[str], how_to_list: str) -> ModelLoadError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ModelLoadError(f"Unknown {kind} model ({name}).{hint} List the known names with {how_to_list}.")


@contextmanager
def _seeded_init() -> Iterator[None]:
    """Fixed RNG for random initialisation, without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        yield


# ----------------------------------------------------------------------------------------------
# timm


def _timm_weights_cached(cfg: Any) -> tuple[bool, str]:
    """Whether the weights a timm pretrained cfg points at are in a local cache, and where we looked."""
    if cfg.hf_hub_id:
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        return _hf_cached(cfg.hf_hub_id, names), f"Hugging Face cache, repo {cfg.hf_hub_id}"
    if cfg.url:
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        return target.is_file(), str(target)
    return False, "no hub id or url in the pretrained config"


def _timm_head_width(state_dict: dict, classifier: str | Sequence[str] | None) -> int:
    """Number of classes of the checkpoint's classifier (0 when it has none)."""
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    for name in names:
        weight = state_dict.get(f"{name}.weight")
        if weight is not None and weight.ndim >= 1:
            return int(weight.shape[0])
    return 0


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
        except Exception as exc:  # noqa: BLE001 - a broken plugin is named, and the others still load
            raise ModelLoadError(f"The timm model plugin {point.name} ({point.value}) failed to import: {exc}") \
                from exc
        loaded.append(point.value)
    return loaded


def _create_timm_model(spec: EncoderSpec) -> tuple[nn.Module, str | None]:
    import timm
    from timm.models import get_pretrained_cfg, load_state_dict, split_model_name_tag

    _refuse_schema("timm", spec.name)
    arch, tag = split_model_name_tag(spec.name)
    if not timm.is_model(arch):
        load_model_plugins()
    if not timm.is_model(arch):
        raise _unknown_name_error(
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
        path = _local_file(spec.weights, f"timm model {spec.name}")
        try:
            state = load_state_dict(str(path))
            head_cfg = cfg or get_pretrained_cfg(arch)
            n = _timm_head_width(state, head_cfg.classifier if head_cfg else None)
            with _seeded_init():
                model = timm.create_model(
                    spec.name,
                    pretrained=True,
                    num_classes=n,
                    pretrained_cfg_overlay=dict(state_dict=state, num_classes=n),
                )
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise ModelLoadError(
                f"Weights file {str(path)!r} cannot be loaded into timm model {spec.name}: {exc}. "
                "Check that the file was saved from this architecture."
            ) from exc
        model.pretrained_cfg.pop("state_dict", None)  # do not keep a second copy of the weights
        model.reset_classifier(0)
        return model, str(path)
    if tag:
        if hub_offline():
            cached, where = _timm_weights_cached(cfg)
            if not cached:
                raise _not_cached_error(
                    f"timm model {spec.name}", where, f"'timm:{spec.name}@/path/weights.safetensors'"
                )
        try:
            return timm.create_model(spec.name, pretrained=True, num_classes=0), tag
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelLoadError(
                f"Weights of timm model {spec.name} could not be fetched or loaded ({exc}): "
                f"the weights must be cached, or given as a local file ('timm:{spec.name}@PATH')."
            ) from exc
    with _seeded_init():
        return timm.create_model(arch, pretrained=False, num_classes=0), None


def create_source_encoder(spec: str | EncoderSpec, device: str | torch.device | None = None) -> SourceEncoder:
    """A timm feature extractor from a spec string (``timm:resnet50.a1_in1k``) or an ``EncoderSpec``."""
    from timm.data import create_transform, resolve_model_data_config

    spec = EncoderSpec.parse(spec) if isinstance(spec, str) else spec
    model, weights = _create_timm_model(spec)
    data_config = resolve_model_data_config(model)
    preprocess = create_transform(**data_config, is_training=False)
    dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    identity = ModelIdentity("timm", _timm_identity_name(spec.name, weights), weights, state_dict_sha256(model), dim)
    return SourceEncoder(model, identity, preprocess, resolve_device(device), data_config)


def _timm_identity_name(name: str, weights: str | None) -> str:
    """The architecture name; the tag is kept only when it chose preprocessing for a local file."""
    from timm.models import split_model_name_tag

    arch, tag = split_model_name_tag(name)
    return name if tag and weights != tag else arch


# ----------------------------------------------------------------------------------------------
# open_clip


def _register_clip_config(path: Path) -> str:
    """Make a custom open_clip model config JSON known to open_clip; return the name it is known by."""
    import open_clip

    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Cannot read open_clip model config {str(path)!r}: {exc}.") from exc
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


def _clip_tag_cached(model_name: str, tag: str) -> tuple[bool, str]:
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


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text or "/" in text or Path(text).suffix in {".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt"}
    )


def _create_open_clip_model(spec: ClipSpec) -> tuple[nn.Module, Callable, str, str, str | None]:
    """(model, eval transform, open_clip name, identity name, weights reference)."""
    import open_clip
    from open_clip.pretrained import is_pretrained_cfg, list_pretrained_tags_by_model

    _refuse_schema("open_clip", spec.name)
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
            raise _unknown_name_error(
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
            cached, where = _clip_tag_cached(model_name, spec.pretrained)
            if not cached:
                raise _not_cached_error(
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
        pretrained = weights = str(_local_file(spec.pretrained, f"open_clip model {model_name}"))
    try:
        with _seeded_init():
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, pretrained_text=False, device="cpu"
            )
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
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
