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
        audit: {window: 24h, alpha: 0.005, correction: bh, min_ks: 0.02, min_effect_size: 0.1}
        alerts: {channels: [oncall], quiet_period: 6h, retries: 3}
        schedules: {audit_cron: "0 * * * *", inbox: /data/inbox, ingest_interval: 10m}
        retention: {vectors: 90d}          # drop vectors of older images (scores and audits stay)
    channels:                          # alert channels, named once, used by any monitor
      oncall: {type: webhook, url_env: ONCALL_WEBHOOK_URL}     # or url_secret: <Prefect Secret block>
      slack: {type: prefect_block, block: slack-webhook/ml-alerts}
      mail: {type: email, credentials: ops-smtp, to: [oncall@example.com]}
      log: {type: file, path: alerts.jsonl}

Relative paths are resolved against the file's directory. ``load_models`` loads the models and
checks, before any image is read, that the aligner joins exactly this encoder and CLIP model and
that the bank was encoded in that CLIP space.
"""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from t2c_monitor.channels import BlockChannel, Channel, EmailChannel, FileChannel, WebhookChannel
from t2c_monitor.durations import Duration, PositiveDuration, check_cron
from t2c_monitor.errors import ConfigError
from t2c_monitor.redaction import carries_credentials
from t2c_monitor.textfiles import MAX_SHOWN, clip, read_yaml

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestConfig(_Strict):
    """How batches are embedded and stored."""

    batch_size: int = Field(64, ge=1, le=4096, description="images per encoder forward pass")
    chunk_size: int = Field(512, ge=1, le=100_000, description="images per database transaction")
    decode_threads: int = Field(2, ge=1, le=64, description="threads decoding images while the encoder runs")
    store_writers: int = Field(2, ge=1, le=16, description="database connections storing chunks at once")
    workers: int = Field(1, ge=1, le=256, description="Dask workers (shards) for one batch")
    dask_address: str | None = Field(None, description="an existing Dask scheduler; default a LocalCluster")
    decode_timeout_s: float = Field(60.0, gt=0, le=3600, description="seconds one image may take to read and "
                                    "decode before it is recorded as too slow and the batch goes on")
    allowed_roots: list[str] = Field(default_factory=list, description="folders and URI prefixes images may come "
                                     "from (empty: anywhere); any other image is refused and recorded, not read")

    @field_validator("allowed_roots")
    @classmethod
    def _roots_not_empty(cls, value: list[str]) -> list[str]:
        if any(not str(r).strip() for r in value):
            raise ValueError("an allowed root is empty: give folders or URI prefixes such as s3://bucket/images/")
        return [str(r).strip() for r in value]


class AuditConfig(_Strict):
    """What a scheduled audit compares and when it flags a concept (see ``drift.KSDriftDetector``)."""

    last: int = Field(1, ge=1, le=10_000, description="audit the last K stored batches (unless window is set)")
    min_images: int = Field(20, ge=20, le=1_000_000,  # 20: the KS detector's minimum (drift.validation)
                            description="with `last`: reach back over earlier batches until the window holds this "
                            "many images (small inbox batches still get tested)")
    window: PositiveDuration | None = Field(None, description="audit the batches stored in this span before now, "
                                            "e.g. 24h")
    alpha: float = Field(0.005, gt=0, lt=1, description="corrected p-value at or below which a concept may flag")
    correction: Literal["bh", "bonferroni"] = Field("bh", description="multiple-testing correction across concepts: "
                                                    "Benjamini-Hochberg (false discovery rate) or Bonferroni")
    min_ks: float = Field(0.02, ge=0, le=1, description="smallest KS statistic that flags")
    min_effect_size: float = Field(0.1, ge=0, description="smallest mean shift, in baseline SDs, that flags")
    reservoir: int = Field(100_000, ge=20, description="baseline scores kept per concept")
    vectors: int = Field(5000, ge=100, le=200_000,
                         description="baseline aligned vectors kept for root causes and the vector test")
    root_min_share: float = Field(0.1, gt=0, lt=1,
                                  description="smallest share of the shift (beyond noise) a root explains")
    root_quantile: float = Field(0.2, gt=0, lt=1,
                                 description="top share of baseline images that estimates a concept's effect")
    vector_alpha: float = Field(0.001, gt=0, lt=1,
                                description="level of the test on the aligned vectors and of 'unlisted drift'")
    unlisted_share: float = Field(0.6, gt=0, lt=1,
                                  description="share of the shift left after the roots that reports unlisted drift")
    evidently: bool = Field(True, description="also save each audit as an evidently report and workspace run "
                            "($T2C_HOME/evidently; `t2c ui` browses them)")

    def root_settings(self):
        """The settings of ``drift.explain_shift``."""
        from t2c_monitor.drift.roots import RootSettings

        return RootSettings(alpha=self.alpha, vector_alpha=self.vector_alpha, min_share=self.root_min_share,
                            quantile=self.root_quantile, unlisted_share=self.unlisted_share)


class AlertsConfig(_Strict):
    """Who is told about flagged concepts, and how often."""

    channels: list[str | Channel] = Field(default_factory=list, description="names from `channels:` or inline")
    quiet_period: Duration = Field(timedelta(hours=6), description="no re-alert of an ongoing drift within this")
    retries: int = Field(3, ge=0, le=20, description="extra attempts of a failed send")
    retry_delay: Duration = Field(timedelta(seconds=5), description="first wait between attempts (doubles)")
    report_url: str | None = Field(None, description="where readers open a report; {audit_id} and {monitor} "
                                                     "are filled in (default: the report file's path)")
    digest: bool = Field(False, description="send the report job's digest of the period to these channels too")
    no_data_after: PositiveDuration | None = Field(
        None, description="alert when the monitor has stored no batch for this long, e.g. 1d (checked when a "
        "scheduled audit finds nothing new; repeated once per quiet period while it lasts)")

    def resolved_channels(self) -> list[WebhookChannel | BlockChannel | EmailChannel | FileChannel]:
        return [c for c in self.channels if not isinstance(c, str)]


class SchedulesConfig(_Strict):
    """Deployments `t2c serve` runs for this monitor."""

    audit_cron: str | None = Field(None, description="cron of the drift audit, e.g. '0 * * * *'")
    report_cron: str | None = Field(None, description="cron of the report job (words and reports of audits that "
                                    "lack them, a digest of the period), e.g. '0 7 * * *'")
    timezone: str = Field("UTC", description="IANA time zone of the crons, e.g. Europe/Berlin")
    inbox: str | None = Field(None, description="source ingested on an interval (new files only)")
    ingest_interval: PositiveDuration | None = Field(None, description="how often the inbox is ingested, e.g. 10m")

    @field_validator("audit_cron", "report_cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as UTC or Europe/Berlin") from None
        return value

    @field_validator("inbox")
    @classmethod
    def _inbox_without_credentials(cls, value: str | None) -> str | None:
        if value is not None and carries_credentials(value):
            raise ValueError("the inbox URI carries a credential, which would be stored with the monitor and in "
                             "every run's parameters: give it to the filesystem through its environment (e.g. "
                             "AWS_SECRET_ACCESS_KEY) instead")
        return value

    @model_validator(mode="after")
    def _inbox_needs_interval(self) -> SchedulesConfig:
        if (self.inbox is None) != (self.ingest_interval is None):
            raise ValueError("inbox and ingest_interval go together: the source and how often to ingest it")
        return self


class RetentionConfig(_Strict):
    """How long image vectors are kept. Dropping a vector keeps everything an audit or a dashboard reads
    later (the image row and its concept scores, batches, baselines, audits, reports): re-auditing an old
    window still tests every concept; only its root causes and words, which need vectors, are left out.
    Batches of the active baseline keep their vectors."""

    vectors: PositiveDuration | None = Field(None, description="drop the aligned vectors of images older than this, "
                                     "e.g. 90d (none: keep them all)")
    cron: str = Field("30 3 * * *", description="when `t2c serve` applies it (the monitor's schedules.timezone)")

    @field_validator("vectors")
    @classmethod
    def _at_least_a_day(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(days=1):
            raise ValueError("keep vectors at least 1d: audits and searches of recent images need them")
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        return check_cron(value)


class DecodeConfig(_Strict):
    """How this monitor's vectors and drift directions are put into words (`t2c decode`, reports)."""

    decoder: Literal["vocab", "prefix", "guided"] = Field("vocab", description="the decoder used by default")
    words: list[str] = Field(default_factory=list, description="extra vocabulary terms besides the bank's")
    bpe_words: bool = Field(True, description="add open_clip's ~33k whole words to the vocabulary")
    corpus: Path | None = Field(None, description="captions the CLIP was trained on (one per line): keep only the "
                                "open_clip words they use (for a CLIP trained on a small corpus)")
    prefix: Path | None = Field(None, description="directory written by `t2c decoder train` (the prefix decoder)")
    lm: str = Field("gpt2", description="causal LM of the guided decoder: hub name or save_pretrained directory")
    guided: dict[str, Any] = Field(default_factory=dict, description="guided decoder knobs (ZeroCap's), e.g. "
                                   "{max_tokens: 12, num_iterations: 3}")
    top: int = Field(5, ge=1, le=100, description="texts per decoded vector")

    @field_validator("guided")
    @classmethod
    def _known_guided_knobs(cls, value: dict[str, Any]) -> dict[str, Any]:
        from t2c_monitor.decode.guided import GuidedSettings

        try:
            GuidedSettings(**value)
        except TypeError as exc:
            known = ", ".join(f.name for f in fields(GuidedSettings))
            raise ValueError(f"unknown guided decoder knob ({exc}); known: {known}") from exc
        return value


class MonitorConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="lowercase letters, digits, - and _ (at most 63)")
    encoder: str = Field(description="source encoder spec, e.g. timm:resnet50.a1_in1k")
    clip: str = Field(description="CLIP model spec, e.g. open_clip:ViT-B-32@laion2b_s34b_b79k")
    aligner: Path = Field(description="directory written by `t2c aligner fit --out`")
    bank: Path = Field(description="bank definition (.yaml/.yml/.txt) or a saved bank directory")
    description: str = Field("", description="free text shown in lists and reports")
    ingest: IngestConfig = IngestConfig()
    audit: AuditConfig = AuditConfig()
    alerts: AlertsConfig = AlertsConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    decode: DecodeConfig = DecodeConfig()
    retention: RetentionConfig = RetentionConfig()
    cbm: Path | None = Field(default=None, description="a concept bottleneck model written by `t2c cbm fit --out`: "
                             "audits then report how each class's concept evidence shifted")

    @field_validator("encoder", "clip")
    @classmethod
    def _spec_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a model spec such as timm:resnet50.a1_in1k")
        return value.strip()

    def resolved(self, base: Path, channels: dict[str, Any] | None = None) -> MonitorConfig:
        """Paths made absolute against ``base`` (the config file's directory) and channel names
        replaced by their definitions from ``channels``."""
        named = channels or {}
        resolved_channels = []
        for i, channel in enumerate(self.alerts.channels):
            if isinstance(channel, str):
                channel = named[channel]  # MonitorFile checked the name
            else:
                channel = channel.model_copy(update={"name": channel.name or f"{self.name}-{channel.type}-{i}"})
            if isinstance(channel, FileChannel):
                channel = channel.model_copy(update={"path": _absolute(channel.path, base)})
            resolved_channels.append(channel)
        return self.model_copy(
            update={
                "aligner": _absolute(self.aligner, base),
                "bank": _absolute(self.bank, base),
                "cbm": _absolute(self.cbm, base) if self.cbm else None,
                "encoder": _absolute_spec(self.encoder, base),
                "clip": _absolute_spec(self.clip, base),
                "alerts": self.alerts.model_copy(update={"channels": resolved_channels}),
                "ingest": self.ingest.model_copy(update={"allowed_roots": [
                    r if "://" in r else str(_absolute(Path(r), base)) for r in self.ingest.allowed_roots]}),
                "decode": self.decode.model_copy(update={
                    "corpus": _absolute(self.decode.corpus, base) if self.decode.corpus else None,
                    "prefix": _absolute(self.decode.prefix, base) if self.decode.prefix else None,
                    "lm": str(_absolute(Path(self.decode.lm), base))
                    if _is_local_path(self.decode.lm, base) or (base / self.decode.lm).is_dir() else self.decode.lm,
                }),
            }
        )


class MonitorFile(_Strict):
    monitors: list[MonitorConfig] = Field(min_length=1)
    channels: dict[str, Channel] = Field(default_factory=dict, description="alert channels by name")

    @model_validator(mode="after")
    def _unique_names(self) -> MonitorFile:
        names = [m.name for m in self.monitors]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"monitor names must be unique; repeated: {', '.join(repeated)}")
        return self

    @model_validator(mode="after")
    def _channels_exist(self) -> MonitorFile:
        for monitor in self.monitors:
            unknown = [c for c in monitor.alerts.channels if isinstance(c, str) and c not in self.channels]
            if unknown:
                known = ", ".join(sorted(self.channels)) or "none is declared under channels:"
                raise ValueError(f"monitor {monitor.name} names unknown alert channel(s) {', '.join(unknown)} "
                                 f"(declared: {known})")
        return self

    def named_channels(self) -> dict[str, Any]:
        return {name: c.model_copy(update={"name": name}) for name, c in self.channels.items()}


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


def _describe_errors(exc: ValidationError, where: str, *, limit: int = 20) -> str:
    """One line per wrong key (at most ``limit``), each quoting what the file held cut short: a file from
    outside decides how long its keys and values are."""
    lines = []
    errors = exc.errors()
    for error in errors[:limit]:
        loc = error["loc"]
        path = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
        path = clip(path)[1:-1] if len(path) > MAX_SHOWN else path
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(MonitorFile, loc)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"  {path}: unknown key{hint}")
        elif error["type"] == "missing":
            lines.append(f"  {path}: required key is missing")
        elif not loc or isinstance(error.get("input"), dict):
            lines.append(f"  {path or '(file)'}: {error['msg'][:MAX_SHOWN]}")
        else:
            lines.append(f"  {path}: {error['msg'][:MAX_SHOWN]} (got {clip(error.get('input'))})")
    if len(errors) > limit:
        lines.append(f"  ... and {len(errors) - limit} more")
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
    channels = parsed.named_channels()
    return [m.resolved(base, channels) for m in parsed.monitors]


def load_monitor_file(path: str | Path) -> list[MonitorConfig]:
    """Read and validate a monitors YAML file."""
    path = Path(path)
    data = read_yaml(path, what="monitor file")
    return parse_monitors(data, where=str(path), base=path.resolve().parent)
