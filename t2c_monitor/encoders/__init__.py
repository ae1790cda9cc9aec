"""Vision encoders (timm) and CLIP models (open_clip), each created by one factory from a spec.

``create_source_encoder("timm:NAME[.TAG][@FILE]")`` builds a ``SourceEncoder`` and
``create_clip_model("open_clip:NAME[@PRETRAINED]")`` a ``ClipModel``; these two factories are the
public entry, and every name the rest of the code imports from ``t2c_monitor.encoders`` is
re-exported here. The package is split by what each part does:

``specs``          the spec grammar (``EncoderSpec``, ``ClipSpec``) and the errors that name a model
``base``           what both kinds share: the encoder objects, batching, the weights hash, seeded init
``hub``            offline hub resolution: whether a hub tag's weights are cached, without the network
``timm_encoders``  the timm factory and the entry-point plugins that register architectures
``clip_models``    the open_clip factory, custom model configs and the tokenizer
"""

from __future__ import annotations

from t2c_monitor.encoders.base import (
    RANDOM_INIT_SEED,
    ClipModel,
    SourceEncoder,
    batch_starts,
    state_dict_sha256,
)
from t2c_monitor.encoders.clip_models import create_clip_model
from t2c_monitor.encoders.hub import hub_offline
from t2c_monitor.encoders.specs import KINDS, ClipSpec, EncoderSpec
from t2c_monitor.encoders.timm_encoders import MODEL_PLUGINS, create_source_encoder, load_model_plugins
from t2c_monitor.identity import ModelIdentity

__all__ = [
    "KINDS",
    "MODEL_PLUGINS",
    "RANDOM_INIT_SEED",
    "ClipModel",
    "ClipSpec",
    "EncoderSpec",
    "ModelIdentity",
    "SourceEncoder",
    "batch_starts",
    "create_clip_model",
    "create_source_encoder",
    "hub_offline",
    "load_model_plugins",
    "state_dict_sha256",
]
