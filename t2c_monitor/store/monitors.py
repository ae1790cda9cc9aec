"""Recording monitors and the models they bind, and reading back what a run needs.

Models are recorded by identity (name + hash of the weights), so re-applying an unchanged config
changes nothing; a bank whose concepts or vectors changed becomes a new version of that bank.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from t2c_monitor.errors import ConfigError
from t2c_monitor.identity import ModelIdentity
from t2c_monitor.monitors import MonitorConfig
from t2c_monitor.store import models as m


def _get_or_add(session: Session, model: type, match: dict[str, Any], values: dict[str, Any]):
    row = session.execute(select(model).filter_by(**match)).scalar_one_or_none()
    if row is None:
        row = model(**match, **values)
        session.add(row)
        session.flush()
    return row


def record_encoder(session: Session, identity: dict[str, Any], preprocess: dict[str, Any]) -> m.Encoder:
    return _get_or_add(
        session, m.Encoder,
        {"name": identity["name"], "weights_sha256": identity["weights_sha256"]},
        {"weights_ref": identity.get("weights"), "feature_dim": identity["dim"], "preprocess": preprocess},
    )


def record_clip(session: Session, identity: dict[str, Any]) -> m.ClipModel:
    return _get_or_add(
        session, m.ClipModel,
        {"name": identity["name"], "weights_sha256": identity["weights_sha256"]},
        {"pretrained": identity.get("weights"), "embed_dim": identity["dim"]},
    )


def record_aligner(session: Session, *, encoder_id: int, clip_model_id: int, aligner: Any, path: str) -> m.Aligner:
    """The aligner's weights are kept in the database too, so any run can prove which map it used."""
    from safetensors.torch import save

    weights = save({"W": aligner.W.contiguous(), "b": aligner.b.contiguous()})
    digest = hashlib.sha256(weights).hexdigest()
    for row in session.execute(
        select(m.Aligner).filter_by(encoder_id=encoder_id, clip_model_id=clip_model_id, path=path)
    ).scalars():
        if row.weights is not None and hashlib.sha256(row.weights).hexdigest() == digest:
            return row
    row = m.Aligner(
        encoder_id=encoder_id, clip_model_id=clip_model_id, method=aligner.method, d_in=aligner.d_in,
        d_out=aligner.d_out, weights=weights, path=path, metrics=dict(aligner.metrics),
    )
    session.add(row)
    session.flush()
    return row


def record_bank(session: Session, *, clip_model_id: int, bank: Any) -> m.ConceptBank:
    """The stored bank with these concepts and vectors, or a new version of the bank's name."""
    vectors = bank.vectors.numpy().astype(np.float32)
    existing = session.execute(
        select(m.ConceptBank).filter_by(name=bank.name, clip_model_id=clip_model_id).order_by(m.ConceptBank.version)
    ).scalars().all()
    for row in existing:
        names, stored = bank_vectors(session, row.id)
        same_names = names == list(bank.concept_names)
        if same_names and stored.shape == vectors.shape and np.allclose(stored, vectors, atol=1e-6):
            return row
    latest = session.execute(select(func.max(m.ConceptBank.version)).filter_by(name=bank.name)).scalar()
    version = int(bank.version) if latest is None else max(int(bank.version), latest + 1)
    row = m.ConceptBank(
        name=bank.name, version=version, clip_model_id=clip_model_id, dim=bank.dim, templates=list(bank.templates)
    )
    session.add(row)
    session.flush()
    session.add_all([
        m.Concept(bank_id=row.id, position=i, name=name, phrasings=list(phr), vector=vectors[i])
        for i, (name, phr) in enumerate(zip(bank.concept_names, bank.phrasings, strict=True))
    ])
    session.flush()
    return row


def record_monitor(session: Session, models: Any) -> m.Monitor:
    """Record (or update) a monitor and the models it binds; returns the monitor row."""
    config = models.config
    encoder = record_encoder(session, models.encoder.identity.to_dict(), _jsonable(models.encoder.data_config))
    clip = record_clip(session, models.clip.identity.to_dict())
    aligner = record_aligner(session, encoder_id=encoder.id, clip_model_id=clip.id, aligner=models.aligner,
                             path=str(config.aligner))
    bank = record_bank(session, clip_model_id=clip.id, bank=models.bank)
    values = {"encoder_id": encoder.id, "clip_model_id": clip.id, "aligner_id": aligner.id, "bank_id": bank.id,
              "config": config.model_dump(mode="json")}
    row = session.execute(select(m.Monitor).filter_by(name=config.name)).scalar_one_or_none()
    if row is None:
        row = m.Monitor(name=config.name, **values)
        session.add(row)
    else:
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = func.now()
    session.flush()
    return row


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def bank_vectors(session: Session, bank_id: int) -> tuple[list[str], np.ndarray]:
    """Concept names and vectors of a stored bank, in score-column order."""
    rows = session.execute(
        select(m.Concept.name, m.Concept.vector).where(m.Concept.bank_id == bank_id).order_by(m.Concept.position)
    ).all()
    return [r.name for r in rows], np.array([np.asarray(r.vector, dtype=np.float32) for r in rows], dtype=np.float32)


def bank_templates(session: Session, bank_id: int) -> tuple[str, ...]:
    """The prompt templates a stored bank was encoded with (free text is encoded the same way)."""
    templates = session.execute(select(m.ConceptBank.templates).where(m.ConceptBank.id == bank_id)).scalar_one()
    return tuple(templates or ("{}",))


@dataclass(frozen=True)
class MonitorRecord:
    """What a run needs to know about a recorded monitor."""

    id: int
    name: str
    config: MonitorConfig  # validated once, here: every part reads it typed
    encoder: ModelIdentity
    clip: ModelIdentity
    aligner_id: int
    aligner_path: str | None
    bank_id: int
    bank_name: str
    bank_version: int
    concept_names: list[str]
    concept_vectors: np.ndarray


# (database URL, monitor name) -> (version key, record): a run reads its monitor many times (plan,
# ingest, audit, alert), and only the monitor row itself is read again to see that nothing changed
_RECORDS: dict[tuple[str, str], tuple[tuple, MonitorRecord]] = {}


def get_monitor(session: Session, name: str) -> MonitorRecord:
    """The recorded monitor ``name`` as a run needs it; cached in this process and reused while the
    monitor row is unchanged (its config, models and ``updated_at``): the concept vectors are read
    once per bank, not on every call."""
    row = session.execute(select(m.Monitor).filter_by(name=name)).scalar_one_or_none()
    if row is None:
        known = session.execute(select(m.Monitor.name).order_by(m.Monitor.name)).scalars().all()
        raise ConfigError(
            f"No monitor named {name!r}"
            + (f"; known monitors: {', '.join(known)}." if known else "; none is recorded yet.")
            + " Declare it in a YAML file and run `t2c monitor apply FILE`."
        )
    version = (row.id, row.updated_at, row.encoder_id, row.clip_model_id, row.aligner_id, row.bank_id,
               json.dumps(row.config, sort_keys=True))  # the row is read anyway; the bank's vectors are not
    cache_key = (session.get_bind().url.render_as_string(hide_password=True), name)
    cached = _RECORDS.get(cache_key)
    if cached is not None and cached[0] == version:
        return cached[1]
    enc = session.get(m.Encoder, row.encoder_id)
    clip = session.get(m.ClipModel, row.clip_model_id)
    aligner = session.get(m.Aligner, row.aligner_id)
    bank = session.get(m.ConceptBank, row.bank_id)
    names, vectors = bank_vectors(session, bank.id)
    vectors.setflags(write=False)  # shared by every reader of the cached record
    record = MonitorRecord(
        id=row.id, name=row.name, config=MonitorConfig.model_validate(row.config),
        encoder=ModelIdentity("timm", enc.name, enc.weights_ref, enc.weights_sha256, enc.feature_dim),
        clip=ModelIdentity("open_clip", clip.name, clip.pretrained, clip.weights_sha256, clip.embed_dim),
        aligner_id=aligner.id, aligner_path=aligner.path, bank_id=bank.id, bank_name=bank.name,
        bank_version=bank.version, concept_names=names, concept_vectors=vectors,
    )
    _RECORDS[cache_key] = (version, record)
    return record


@dataclass(frozen=True)
class MonitorSummary:
    """A recorded monitor as `t2c monitor list` shows it."""

    name: str
    encoder: str
    clip: str
    bank: str
    bank_version: int
    updated_at: datetime


def list_monitors(session: Session) -> list[MonitorSummary]:
    """The recorded monitors, by name."""
    rows = session.execute(
        select(m.Monitor.name, m.Encoder.name.label("encoder"), m.ClipModel.name.label("clip"),
               m.ConceptBank.name.label("bank"), m.ConceptBank.version.label("bank_version"),
               m.Monitor.updated_at)
        .join(m.Encoder, m.Encoder.id == m.Monitor.encoder_id)
        .join(m.ClipModel, m.ClipModel.id == m.Monitor.clip_model_id)
        .join(m.ConceptBank, m.ConceptBank.id == m.Monitor.bank_id)
        .order_by(m.Monitor.name)
    ).all()
    return [MonitorSummary(**r._mapping) for r in rows]
