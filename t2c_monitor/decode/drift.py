"""An audit's shift in words: what grew, what shrank, what the bank does not name, and a sentence.

``drift_words`` decodes the drift direction (window mean minus baseline mean of aligned vectors)
with the monitor's ``vocab`` decoder as a signed sparse mix of terms (what grew, what shrank); when
the audit found drift the bank does not explain, the unexplained residual too; and when the
monitor names a sentence decoder (``decode: {decoder: prefix|guided}``), the window's mean
centred on the baseline's as a sentence. Decoders are built once per monitor version and process
(``audit_decoders``), so a scheduled audit does not reload models each time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from t2c_monitor.decode.base import Decoder
from t2c_monitor.decode.vocab import VocabDecoder
from t2c_monitor.store.monitors import MonitorRecord


@dataclass(frozen=True)
class DriftWords:
    """Decoded words of one audit (each list best first)."""

    grew: list[str] = field(default_factory=list)
    shrank: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # what the residual adds, when the drift is unlisted
    unlisted_shrank: list[str] = field(default_factory=list)
    sentence: str | None = None
    decoder: str | None = None  # the sentence decoder's kind

    def text(self) -> str:
        """One line: 'more night, dark; fewer sand' (empty when nothing was decoded)."""
        parts = []
        if self.grew:
            parts.append("more " + ", ".join(self.grew))
        if self.shrank:
            parts.append("fewer " + ", ".join(self.shrank))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DriftWords | None:
        if not data:
            return None
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


# (CLIP, bank, monitor config, top) -> (vocab decoder, sentence decoder or None)
_DECODERS: dict[tuple, tuple[VocabDecoder, Decoder | None]] = {}


def audit_decoders(record: MonitorRecord, top: int = 3) -> tuple[VocabDecoder, Decoder | None]:
    """The monitor's vocab decoder (sparse, ``top`` terms) and its sentence decoder, if it names one."""
    from t2c_monitor.decode.monitor import decoder_settings, monitor_clip, monitor_decoder
    from t2c_monitor.monitor_models import load_bank

    key = (record.clip, record.bank_name, record.bank_version, tuple(record.concept_names),
           json.dumps(record.config.model_dump(mode="json"), sort_keys=True), top)
    if key not in _DECODERS:
        clip = monitor_clip(record)
        bank = load_bank(record.config.bank, clip, name=record.name)
        vocab = monitor_decoder(record, decoder_settings(record, "vocab", mode="sparse", top=top), clip=clip,
                                bank=bank)
        assert isinstance(vocab, VocabDecoder)
        sentence = None
        if record.config.decode.decoder != "vocab":
            sentence = monitor_decoder(record, decoder_settings(record), clip=clip, bank=bank)
        _DECODERS.clear()  # one monitor version at a time is plenty for a worker
        _DECODERS[key] = (vocab, sentence)
    return _DECODERS[key]


def drift_words(record: MonitorRecord, *, direction: np.ndarray, baseline_mean: np.ndarray,
                residual: np.ndarray | None = None, top: int = 3) -> DriftWords:
    """Decode an audit's drift ``direction`` (and its unexplained ``residual`` when given)."""
    vocab, sentence_decoder = audit_decoders(record, top)
    signed = vocab.decode_direction(direction, space=record.clip)
    unlisted = vocab.decode_direction(residual, space=record.clip) if residual is not None else None
    sentence = None
    if sentence_decoder is not None:
        window_mean = np.asarray(baseline_mean, dtype=np.float32) + np.asarray(direction, dtype=np.float32)
        decoded = sentence_decoder.with_image_mean(baseline_mean).decode(window_mean[None], space=record.clip)
        sentence = decoded[0].text or None
    return DriftWords(
        grew=signed.grew.words(top), shrank=signed.shrank.words(top),
        unlisted=unlisted.grew.words(top) if unlisted else [], unlisted_shrank=unlisted.shrank.words(top) if unlisted
        else [], sentence=sentence, decoder=sentence_decoder.name if sentence_decoder is not None else None,
    )
