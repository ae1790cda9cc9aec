"""Model specs: the strings that name a model and its weights, and the errors that name them back.

A spec is ``KIND:NAME[@WEIGHTS]``; the kind prefix may be left out when the factory already
says which kind it builds.

``timm:NAME[.TAG][@FILE]`` -- a source encoder (``create_source_encoder``)
    ``timm:resnet50.a1_in1k``             weights of the hub tag ``a1_in1k`` (must be cached when offline)
    ``timm:resnet10t``                    random init (seeded, so the same spec gives the same weights)
    ``timm:resnet10t@/path/w.safetensors`` a local safetensors file or a ``weights_only`` torch checkpoint
    ``timm:resnet50.a1_in1k@/path/w.pt``  a local file, with the preprocessing of the tag's config

``open_clip:NAME[@PRETRAINED]`` -- a CLIP model (``create_clip_model``)
    ``open_clip:ViT-B-32@laion2b_s34b_b79k``   a built-in architecture with a pretrained tag
    ``open_clip:ViT-B-32@/path/ckpt.pt``       a built-in architecture with a local checkpoint
    ``open_clip:/path/cfg.json@/path/ckpt.pt`` a custom model config (open_clip's JSON format:
                                               ``embed_dim``, ``vision_cfg``, ``text_cfg``)
    ``open_clip:/path/cfg.json``               the same architecture, random init (seeded)

Everything before the first ``@`` is the name and everything after it the weights; a path that
itself contains ``@`` must be given through ``EncoderSpec`` / ``ClipSpec``. Names are resolved
against the installed registries without any network call; the errors for names we do not know
or do not load (hub/local-dir schemas) live here so both kinds word them alike.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar, Self

from t2c_monitor.errors import ConfigError, ModelLoadError

KINDS = ("timm", "open_clip")


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


class _KindSpec:
    """What both specs share: parsing ``[KIND:]NAME[@WEIGHTS]`` and writing it back out."""

    KIND: ClassVar[str]

    @classmethod
    def parse(cls, text: str) -> Self:
        return cls(*_split_spec(text, cls.KIND))

    def __str__(self) -> str:
        name, weights = (getattr(self, f.name) for f in fields(self))
        return f"{self.KIND}:{name}" + (f"@{weights}" if weights else "")


@dataclass(frozen=True)
class EncoderSpec(_KindSpec):
    """A timm source encoder: ``name`` (optionally ``arch.tag``) and an optional local weights file."""

    KIND: ClassVar[str] = "timm"
    name: str
    weights: str | None = None


@dataclass(frozen=True)
class ClipSpec(_KindSpec):
    """An open_clip model: a built-in name or config JSON path, and a pretrained tag or checkpoint path."""

    KIND: ClassVar[str] = "open_clip"
    name: str
    pretrained: str | None = None


def refuse_schema(kind: str, name: str) -> None:
    """``hf-hub:`` / ``local-dir:`` names fetch configs by themselves; we load only what we can check."""
    if name.startswith(("hf-hub:", "local-dir:", "hf_hub:")):
        raise ModelLoadError(
            f"{kind} model name {name!r} uses a hub/local-dir schema, which is not supported: name the "
            f"architecture and pass its weights file, e.g. '{kind}:ARCH@/path/weights.safetensors'"
            + (" (or a model config JSON: 'open_clip:/path/cfg.json@/path/ckpt.pt')." if kind == "open_clip" else ".")
        )


def unknown_name_error(kind: str, name: str, known: Sequence[str], how_to_list: str) -> ModelLoadError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ModelLoadError(f"Unknown {kind} model ({name}).{hint} List the known names with {how_to_list}.")
