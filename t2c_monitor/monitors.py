"""Monitors: what a deployment watches, declared in a YAML file.

A monitor binds a source encoder (the deployed timm model), the CLIP model whose space concepts
live in, the aligner between the two, a concept bank, and how to ingest (and, later, audit and
alert). ``load_monitor_file`` validates the file and names any bad key with the allowed ones::

    monitors:
      - name: shapes
        encoder: timm:resnet10t@models/shape-encoder.safetensors
        clip: open_clip:models/clip.json@models/clip.pt
        aligner: models/aligner            # written by `t2c aligner fit --out`
        bank: banks/world.yaml             # a bank definition (encoded at apply) or a saved bank directory
        ingest: {batch_size: 64, chunk_size: 512, decode_threads: 2, workers: 1}

Relative paths are resolved against the file's directory. ``load_models`` loads the models and
checks, before any image is read, that the aligner joins exactly this encoder and CLIP model and
that the bank was encoded in that CLIP space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from t2c_monitor.errors import ConfigError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestConfig(_Strict):
    """How batches are embedded and stored."""

    batch_size: int = Field(64, ge=1, le=4096, description="images per encoder forward pass")
    chunk_size: int = Field(512, ge=1, le=100_000, description="images per database transaction")
    decode_threads: int = Field(2, ge=1, le=64, description="threads decoding images while the encoder runs")
    workers: int = Field(1, ge=1, le=256, description="Dask workers (shards) for one batch")
    dask_address: str | None = Field(None, description="an existing Dask scheduler; default a LocalCluster")


class MonitorConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    encoder: str = Field(description="source encoder spec, e.g. timm:resnet50.a1_in1k")
    clip: str = Field(description="CLIP model spec, e.g. open_clip:ViT-B-32@laion2b_s34b_b79k")
    aligner: Path = Field(description="directory written by `t2c aligner fit --out`")
    bank: Path = Field(description="bank definition (.yaml/.yml/.txt) or a saved bank directory")
    description: str = ""
    ingest: IngestConfig = IngestConfig()

    @field_validator("encoder", "clip")
    @classmethod
    def _spec_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a model spec such as timm:resnet50.a1_in1k")
        return value.strip()

    def resolved(self, base: Path) -> MonitorConfig:
        """Paths in the config made absolute against ``base`` (the config file's directory)."""
        return self.model_copy(
            update={
                "aligner": _absolute(self.aligner, base),
                "bank": _absolute(self.bank, base),
                "encoder": _absolute_spec(self.encoder, base),
                "clip": _absolute_spec(self.clip, base),
            }
        )


class MonitorFile(_Strict):
    monitors: list[MonitorConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> MonitorFile:
        names = [m.name for m in self.monitors]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"monitor names must be unique; repeated: {', '.join(repeated)}")
        return self


def _absolute(path: Path, base: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _absolute_spec(spec: str, base: Path) -> str:
    """Make local file parts of a model spec (``KIND:NAME@FILE``) absolute; hub names stay as they are."""
    kind, sep, rest = spec.partition(":") if re.match(r"^(timm|open_clip):", spec) else ("", "", spec)
    parts = rest.split("@", 1)
    fixed = [str(_absolute(Path(p), base)) if _is_local_path(p, base) else p for p in parts]
    return f"{kind}{sep}{'@'.join(fixed)}"


def _is_local_path(text: str, base: Path) -> bool:
    looks_like_file = "/" in text or text.endswith((".json", ".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
    return looks_like_file and (Path(text).expanduser().is_absolute() or (base / text).exists())


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the model at ``loc`` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        current = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return None
    return list(current.model_fields)


def _describe_errors(exc: ValidationError, where: str) -> str:
    lines = []
    for error in exc.errors():
        loc = error["loc"]
        path = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(MonitorFile, loc)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"  {path}: unknown key{hint}")
        elif error["type"] == "missing":
            lines.append(f"  {path}: required key is missing")
        else:
            lines.append(f"  {path or '(file)'}: {error['msg']} (got {error.get('input')!r})")
    return f"{where} is not a valid monitor file:\n" + "\n".join(lines)


def parse_monitors(data: Any, *, where: str = "monitor config", base: Path | None = None) -> list[MonitorConfig]:
    """Validate already-parsed YAML/JSON data; relative paths resolve against ``base``."""
    if isinstance(data, dict) and "monitors" not in data and "name" in data:
        data = {"monitors": [data]}  # a file holding a single monitor
    try:
        parsed = MonitorFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_errors(exc, where)) from None
    base = base or Path.cwd()
    return [m.resolved(base) for m in parsed.monitors]


def load_monitor_file(path: str | Path) -> list[MonitorConfig]:
    """Read and validate a monitors YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"Monitor file {path} does not exist.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Monitor file {path} is not valid YAML: {exc}") from None
    return parse_monitors(data, where=str(path), base=path.resolve().parent)


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
        config.aligner, expect_source=encoder.identity.to_dict(), expect_clip=clip.identity.to_dict()
    )
    bank = load_bank(config.bank, clip, name=config.name)
    return MonitorModels(config=config, encoder=encoder, clip=clip, aligner=aligner, bank=bank)
