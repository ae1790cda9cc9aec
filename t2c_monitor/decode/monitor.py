"""Decoding in a monitor's CLIP space: its vocabulary (the bank's concepts and open_clip's words),
and the use case behind `t2c decode`: an audit's drift direction, or any file of vectors, in words.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t2c_monitor.decode.vocab import Decoded, DecodedDirection, VocabDecoder, VocabMode
from t2c_monitor.decode.vocabulary import build_vocabulary
from t2c_monitor.errors import ConfigError, SpaceMismatchError
from t2c_monitor.identity import describe, same_space
from t2c_monitor.store import Database
from t2c_monitor.store.monitors import MonitorRecord, get_monitor


def monitor_decoder(record: MonitorRecord, *, mode: VocabMode = "sparse", top: int = 5,
                    include_bpe_words: bool = True, progress: bool = False) -> VocabDecoder:
    """The ``vocab`` decoder of the monitor's CLIP space; its vocabulary is cached under
    ``<models>/vocabularies`` (embedding open_clip's 33k words takes a while the first time)."""
    from t2c_monitor.encoders import create_clip_model
    from t2c_monitor.settings import get_settings

    clip = create_clip_model(record.config.clip)
    if not same_space(clip.identity, record.clip):
        raise SpaceMismatchError(
            f"Monitor {record.name} was recorded with CLIP {describe(record.clip)}, but {record.config.clip} now "
            f"loads {describe(clip.identity)}: run `t2c monitor apply` again (and refit what belongs to it)."
        )
    vocabulary = build_vocabulary(clip, record.concept_names, include_bpe_words=include_bpe_words,
                                  cache_dir=get_settings().models_dir / "vocabularies", progress=progress)
    return VocabDecoder(vocabulary, mode=mode, top=top)


def decode_audit(db: Database, monitor: str, audit_id: int, *, top: int = 5, include_bpe_words: bool = True,
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
    decoder = monitor_decoder(record, top=top, include_bpe_words=include_bpe_words, progress=progress)
    return decoder.decode_direction(direction, space=record.clip)


def decode_vector_file(db: Database, monitor: str, path: str | Path, *, mode: VocabMode = "nearest", top: int = 5,
                       include_bpe_words: bool = True, progress: bool = False) -> list[Decoded]:
    """Each row of a ``.npy`` or ``.safetensors`` (tensor ``vectors``) file of vectors of the
    monitor's aligned space, in words."""
    path = Path(path)
    if path.suffix == ".npy":
        vectors = np.load(path)
    elif path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        if "vectors" not in tensors:
            raise ConfigError(f"{path} holds no tensor named 'vectors' (it holds {sorted(tensors)}).")
        vectors = tensors["vectors"]
    else:
        raise ConfigError(f"{path}: give vectors as .npy or .safetensors (a tensor named 'vectors').")
    with db.session() as session:
        record = get_monitor(session, monitor)
    decoder = monitor_decoder(record, mode=mode, top=top, include_bpe_words=include_bpe_words, progress=progress)
    return decoder.decode(vectors, space=record.clip)
