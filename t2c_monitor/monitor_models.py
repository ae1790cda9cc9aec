"""A monitor's models loaded together (encoder, CLIP, aligner, bank), checked to share their spaces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2c_monitor.errors import ConfigError
from t2c_monitor.monitors import MonitorConfig


@dataclass
class MonitorModels:
    """The models of a monitor, loaded and checked to share spaces."""

    config: MonitorConfig
    encoder: Any  # SourceEncoder
    clip: Any  # ClipModel
    aligner: Any  # Aligner
    bank: Any  # ConceptBank


def load_bank(path: Path, clip: Any, *, name: str) -> Any:
    """A saved bank directory (checked against ``clip``), or a definition file encoded with ``clip``."""
    from t2c_monitor.concepts import ConceptBank, encode_bank, load_bank_definition

    if path.is_dir():
        return ConceptBank.load(path, expect_clip=clip.identity)
    if not path.exists():
        raise ConfigError(f"Concept bank {path} (monitor {name}) does not exist.")
    return encode_bank(load_bank_definition(path), clip)


def load_models(config: MonitorConfig, *, device: str | None = None) -> MonitorModels:
    """Load the encoder, CLIP model, aligner and bank of ``config``; refuse mismatched spaces."""
    from t2c_monitor.aligner import Aligner
    from t2c_monitor.encoders import create_clip_model, create_source_encoder

    encoder = create_source_encoder(config.encoder, device=device)
    clip = create_clip_model(config.clip, device=device)
    aligner = Aligner.load(
        config.aligner, expect_source=encoder.identity, expect_clip=clip.identity
    )
    bank = load_bank(config.bank, clip, name=config.name)
    return MonitorModels(config=config, encoder=encoder, clip=clip, aligner=aligner, bank=bank)
