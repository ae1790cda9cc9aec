"""Decoding in a monitor's CLIP space: the use cases behind `t2c decode`.

Each function reads what it needs (the monitor's record, its models, its baseline's mean vector,
which bridges the modality gap for the decoders that centre) and returns typed results:
an audit's drift direction as what grew and what shrank; and, as ``DecodedRow``s, any file of
aligned vectors, the aligned embeddings of images, or the rows of the source model's classifier
(rescaled as the paper's Appendix I says before they are aligned).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from t2c_monitor.decode.base import Decoded, Decoder
from t2c_monitor.decode.factory import DecoderKind, DecoderSettings, create_decoder
from t2c_monitor.decode.vocab import DecodedDirection, VocabDecoder, VocabMode
from t2c_monitor.errors import ConfigError, SpaceMismatchError
from t2c_monitor.identity import describe, same_space
from t2c_monitor.store import Database
from t2c_monitor.store.monitors import MonitorRecord, get_monitor
from t2c_monitor.textfiles import clip, open_regular


@dataclass(frozen=True)
class DecodedRow:
    """One decoded vector and what it is (a row number, an image's URI, a class name)."""

    label: str
    decoded: Decoded

    def to_dict(self) -> dict:
        return {"label": self.label, "texts": [[t, s] for t, s in self.decoded.texts]}


@dataclass(frozen=True)
class SkippedImage:
    uri: str
    reason: str


@dataclass(frozen=True)
class DecodedImages:
    rows: list[DecodedRow]
    skipped: list[SkippedImage]


def decode_with_progress(decoder: Decoder, vectors, space, progress: bool) -> list[Decoded]:
    """``decoder.decode`` in chunks under a progress bar (a guided decode takes about a second a vector)."""
    from t2c_monitor.progress import progress_bar

    rows = vectors if isinstance(vectors, torch.Tensor) else torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    rows = rows[None] if rows.ndim == 1 else rows
    chunk = 1 if decoder.name == "guided" else 256
    out: list[Decoded] = []
    with progress_bar(f"decoding ({decoder.name})", len(rows), progress and len(rows) > chunk) as advance:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            out.extend(decoder.decode(part, space=space))
            advance(len(part))
    return out


def decoder_settings(record: MonitorRecord, kind: DecoderKind | None = None, *, mode: VocabMode = "nearest",
                     top: int | None = None, bpe_words: bool | None = None) -> DecoderSettings:
    """The monitor's ``decode:`` section as decoder settings, with the caller's overrides."""
    from t2c_monitor.settings import get_settings

    config = record.config.decode
    return DecoderSettings(
        kind=kind or config.decoder, top=top or config.top, mode=mode,
        terms=tuple(config.words),
        bpe_words=config.bpe_words if bpe_words is None else bpe_words, corpus=config.corpus,
        cache_dir=get_settings().models_dir / "vocabularies", prefix=config.prefix, lm=config.lm,
        guided=dict(config.guided),
    )


def monitor_clip(record: MonitorRecord):
    """The monitor's CLIP model, refused unless it loads the space the monitor recorded."""
    from t2c_monitor.encoders import create_clip_model

    clip = create_clip_model(record.config.clip)
    if not same_space(clip.identity, record.clip):
        raise SpaceMismatchError(
            f"Monitor {record.name} was recorded with CLIP {describe(record.clip)}, but {record.config.clip} now "
            f"loads {describe(clip.identity)}: run `t2c monitor apply` again (and refit what belongs to it)."
        )
    return clip


def _record_and_mean(db: Database, monitor: str) -> tuple[MonitorRecord, np.ndarray | None]:
    from t2c_monitor.store.baselines import baseline_mean

    with db.session() as session:
        record = get_monitor(session, monitor)
    with db.engine.connect() as conn:
        return record, baseline_mean(conn, record.id)


def monitor_decoder(record: MonitorRecord, settings: DecoderSettings, *, image_mean: np.ndarray | None = None,
                    clip=None, bank=None, progress: bool = False) -> Decoder:
    """The decoder ``settings`` of the monitor's CLIP space; a vocabulary starts with the monitor's bank
    concepts (as the bank's vectors) and is cached under the models directory (embedding open_clip's
    33k words takes a while the first time)."""
    from t2c_monitor.monitor_models import load_bank

    clip = clip or monitor_clip(record)
    if settings.kind == "vocab" and bank is None:
        bank = load_bank(record.config.bank, clip, name=record.name)
    return create_decoder(settings, clip=clip, image_mean=image_mean, bank=bank, progress=progress)


def decode_audit(db: Database, monitor: str, audit_id: int, *, top: int = 5, include_bpe_words: bool | None = None,
                 progress: bool = False) -> DecodedDirection:
    """What grew and what shrank in audit ``audit_id`` of ``monitor``, from its drift direction."""
    from t2c_monitor.store.audits import audit_direction

    with db.session() as session:
        record = get_monitor(session, monitor)
    with db.engine.connect() as conn:
        direction = audit_direction(conn, record.id, audit_id)
    if direction is None:
        raise ConfigError(f"Audit {audit_id} of {monitor} has no drift direction (it failed, or the window's mean "
                          "equals the baseline's): nothing to decode.")
    settings = decoder_settings(record, "vocab", mode="sparse", top=top, bpe_words=include_bpe_words)
    decoder = monitor_decoder(record, settings, progress=progress)
    assert isinstance(decoder, VocabDecoder)
    return decoder.decode_direction(direction, space=record.clip)


def decode_audit_sentences(db: Database, monitor: str, audit_id: int, *, kind: DecoderKind, top: int = 3,
                           progress: bool = False) -> Decoded:
    """Audit ``audit_id``'s shift as sentences of a sentence decoder (``prefix`` or ``guided``): the
    window's mean aligned vector (the baseline's plus the drift direction) centred on the baseline's."""
    from t2c_monitor.store.audits import audit_direction
    from t2c_monitor.store.baselines import baseline_mean

    if kind == "vocab":
        raise ValueError("decode_audit_sentences is for the sentence decoders; decode_audit gives vocab terms")
    with db.session() as session:
        record = get_monitor(session, monitor)
    with db.engine.connect() as conn:
        direction = audit_direction(conn, record.id, audit_id)
        mean = baseline_mean(conn, record.id)
    if direction is None or mean is None:
        raise ConfigError(f"Audit {audit_id} of {monitor} has no drift direction or the monitor no baseline: "
                          "nothing to decode.")
    decoder = monitor_decoder(record, decoder_settings(record, kind, top=top), image_mean=mean, progress=progress)
    return decoder.decode((mean + direction)[None], space=record.clip)[0]


def read_vector_file(path: str | Path) -> np.ndarray:
    """Vectors from a ``.npy`` file or a ``.safetensors`` file's tensor ``vectors``."""
    path = Path(path)
    try:
        os.close(open_regular(path))  # a FIFO or a device given as the file would never end
    except OSError as exc:
        raise ConfigError(f"Vector file {path} cannot be read ({exc.strerror or exc}).") from None
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:  # EOFError: an empty or cut-short file
            raise ConfigError(f"{path} is not a readable .npy array ({clip(str(exc))}).") from None
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ConfigError(f"{path} is not a readable safetensors file ({clip(str(exc))}).") from None
        if "vectors" not in tensors:
            raise ConfigError(f"{path} holds no tensor named 'vectors' (it holds {sorted(tensors)}).")
        return tensors["vectors"]
    raise ConfigError(f"{path}: give vectors as .npy or .safetensors (a tensor named 'vectors').")


def decode_vector_file(db: Database, monitor: str, path: str | Path, *, kind: DecoderKind | None = None,
                       mode: VocabMode = "nearest", top: int | None = None, include_bpe_words: bool | None = None,
                       progress: bool = False) -> list[DecodedRow]:
    """Each row of a file of vectors of the monitor's aligned space, in words."""
    vectors = read_vector_file(path)
    record, mean = _record_and_mean(db, monitor)
    decoder = monitor_decoder(record, decoder_settings(record, kind, mode=mode, top=top, bpe_words=include_bpe_words),
                              image_mean=mean, progress=progress)
    decoded = decode_with_progress(decoder, vectors, record.clip, progress)
    return [DecodedRow(str(i), d) for i, d in enumerate(decoded)]


def decode_images(db: Database, monitor: str, source: str | Path, *, kind: DecoderKind | None = None,
                  mode: VocabMode = "nearest", top: int | None = None, include_bpe_words: bool | None = None,
                  progress: bool = False) -> DecodedImages:
    """The images of ``source`` (a file, folder or URI, as ingest reads them) embedded by the monitor's
    encoder, aligned, and decoded; images that cannot be read are skipped with their reason."""
    from t2c_monitor.images import DecodedImage, load_image
    from t2c_monitor.monitor_models import load_models
    from t2c_monitor.sources import resolve_source

    record, mean = _record_and_mean(db, monitor)
    models = load_models(record.config)
    items = resolve_source(str(source))
    if not items:
        raise ConfigError(f"{source} holds no images.")
    loaded = [load_image(item) for item in items]
    good = [r for r in loaded if isinstance(r, DecodedImage)]
    skipped = [SkippedImage(r.uri, r.reason) for r in loaded if not isinstance(r, DecodedImage)]
    if not good:
        return DecodedImages([], skipped)
    features = models.encoder.encode_images([r.image for r in good], progress=progress)
    aligned = F.normalize(models.aligner.transform(features), dim=1)
    decoder = monitor_decoder(record, decoder_settings(record, kind, mode=mode, top=top, bpe_words=include_bpe_words),
                              image_mean=mean if mean is not None else aligned.mean(0).numpy(), clip=models.clip,
                              bank=models.bank, progress=progress)
    decoded = decode_with_progress(decoder, aligned, record.clip, progress)
    return DecodedImages([DecodedRow(r.uri, d) for r, d in zip(good, decoded, strict=True)], skipped)


def class_head_vectors(encoder, aligner) -> tuple[list[str], torch.Tensor]:
    """The source model's classifier rows aligned into CLIP space (rescaled first, Appendix I), with
    their class names."""
    head = getattr(encoder, "class_head", None)
    if head is None:
        raise ConfigError(f"The source model {describe(encoder.identity)} was loaded without a classifier head "
                          "(random init, or a model with no linear classifier): decode --images or --vectors "
                          "instead.")
    return list(head.labels), F.normalize(aligner.align_vectors(head.weight, rescale=True), dim=1)


def decode_class_head(db: Database, monitor: str, *, kind: DecoderKind | None = None, mode: VocabMode = "nearest",
                      top: int | None = None, include_bpe_words: bool | None = None,
                      progress: bool = False) -> list[DecodedRow]:
    """Each class of the monitor's source model, in words: its classifier row aligned into CLIP space."""
    from t2c_monitor.monitor_models import load_models

    record, mean = _record_and_mean(db, monitor)
    models = load_models(record.config)
    labels, vectors = class_head_vectors(models.encoder, models.aligner)
    decoder = monitor_decoder(record, decoder_settings(record, kind, mode=mode, top=top, bpe_words=include_bpe_words),
                              image_mean=mean, clip=models.clip, bank=models.bank, progress=progress)
    decoded = decode_with_progress(decoder, vectors, record.clip, progress)
    return [DecodedRow(label, d) for label, d in zip(labels, decoded, strict=True)]
