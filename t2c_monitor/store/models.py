"""The database schema as typed SQLAlchemy 2.0 models.

This module is the one description of the tables; Alembic revisions in ``migrations/`` create and
change them, and a test asserts that the migrated schema and these models agree.

Vectors of several dimensions: CLIP models differ in width (512, 768, 1024, ...). Vector columns
are the untyped pgvector ``vector`` with the width recorded beside them (``dim``) and a CHECK that
the two agree. One ``image`` table then serves every monitor, and vectors of different widths are
indexed by per-width partial HNSW indexes (``store.vectors.ensure_hnsw_index``), the approach
pgvector documents for mixed dimensions. A vector is only ever compared with vectors of the same
CLIP model, which the foreign keys record.

Relationships load with ``lazy="raise"``: every query says what it needs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal, get_args

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    REAL,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# the states a row can be in: typed for the code, and CHECK constraints for the database
BatchStatus = Literal["pending", "embedding", "stored", "failed"]
ImageStatus = Literal["ok", "failed"]
AuditStatus = Literal["running", "done", "failed"]
AlertStatus = Literal["pending", "sent", "failed", "suppressed"]
AlertKind = Literal["drift", "no_data"]
BATCH_STATUSES = get_args(BatchStatus)
IMAGE_STATUSES = get_args(ImageStatus)
ALERT_KINDS = get_args(AlertKind)
AUDIT_STATUSES = get_args(AuditStatus)
ALERT_STATUSES = get_args(AlertStatus)
IMAGE_TOAST_TUPLE_TARGET = 8160  # PostgreSQL's maximum: move a vector out of line only when the row needs it


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Encoder(Base):
    """A deployed source vision encoder (a timm model) and the weights it ran with."""

    __tablename__ = "encoder"
    __table_args__ = (UniqueConstraint("name", "weights_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(500), comment="timm model name or path")
    weights_ref: Mapped[str | None] = mapped_column(String(1000), comment="hub tag or local weights file")
    weights_sha256: Mapped[str] = mapped_column(String(64))
    feature_dim: Mapped[int] = mapped_column(Integer)
    preprocess: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _created()


class ClipModel(Base):
    """A CLIP model whose image space the aligned vectors and concept vectors live in."""

    __tablename__ = "clip_model"
    __table_args__ = (UniqueConstraint("name", "weights_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(500), comment="open_clip model name or config path")
    pretrained: Mapped[str | None] = mapped_column(String(1000), comment="pretrained tag or checkpoint path")
    weights_sha256: Mapped[str] = mapped_column(String(64))
    embed_dim: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created()


class Aligner(Base):
    """An affine map from an encoder's features into a CLIP model's image space."""

    __tablename__ = "aligner"

    id: Mapped[int] = mapped_column(primary_key=True)
    encoder_id: Mapped[int] = mapped_column(ForeignKey("encoder.id"), index=True)
    clip_model_id: Mapped[int] = mapped_column(ForeignKey("clip_model.id"), index=True)
    method: Mapped[str] = mapped_column(String(50))
    d_in: Mapped[int] = mapped_column(Integer)
    d_out: Mapped[int] = mapped_column(Integer)
    weights: Mapped[bytes | None] = mapped_column(LargeBinary, comment="safetensors bytes of W and b")
    path: Mapped[str | None] = mapped_column(String(1000))
    metrics: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _created()

    encoder: Mapped[Encoder] = relationship(lazy="raise")
    clip_model: Mapped[ClipModel] = relationship(lazy="raise")


class ConceptBank(Base):
    """A named, versioned set of text concepts encoded by one CLIP model."""

    __tablename__ = "concept_bank"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    clip_model_id: Mapped[int] = mapped_column(ForeignKey("clip_model.id"), index=True)
    dim: Mapped[int] = mapped_column(Integer)
    templates: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = _created()

    clip_model: Mapped[ClipModel] = relationship(lazy="raise")
    concepts: Mapped[list[Concept]] = relationship(
        back_populates="bank", lazy="raise", order_by="Concept.position", cascade="all, delete-orphan"
    )


class Concept(Base):
    """One concept of a bank: its phrasings and their unit vector in CLIP space."""

    __tablename__ = "concept"
    __table_args__ = (
        UniqueConstraint("bank_id", "position"),
        UniqueConstraint("bank_id", "name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("concept_bank.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, comment="column index in score arrays")
    name: Mapped[str] = mapped_column(String(500))
    phrasings: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    vector: Mapped[list[float]] = mapped_column(Vector())

    bank: Mapped[ConceptBank] = relationship(back_populates="concepts", lazy="raise")


class Monitor(Base):
    """What is watched: an encoder, its aligner, a concept bank, schedules and alert channels."""

    __tablename__ = "monitor"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    encoder_id: Mapped[int] = mapped_column(ForeignKey("encoder.id"), index=True)
    clip_model_id: Mapped[int] = mapped_column(ForeignKey("clip_model.id"), index=True)
    aligner_id: Mapped[int] = mapped_column(ForeignKey("aligner.id"), index=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("concept_bank.id"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(
        server_default=text("'{}'::jsonb"), comment="schedules, alert channels, thresholds (no secrets)"
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Batch(Base):
    """A batch of incoming images; its status tells how far ingestion got."""

    __tablename__ = "batch"
    __table_args__ = (
        UniqueConstraint("monitor_id", "external_id"),
        UniqueConstraint("id", "monitor_id"),  # what image's (batch_id, monitor_id) foreign key points at
        CheckConstraint(_one_of("status", BATCH_STATUSES), name="status"),
        Index("ix_batch_monitor_id_received_at", "monitor_id", "received_at"),  # dashboards' time ranges
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitor.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200), comment="given, or derived from the content")
    source_uri: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    n_images: Mapped[int] = mapped_column(Integer, server_default="0")
    n_ok: Mapped[int] = mapped_column(Integer, server_default="0")
    n_failed: Mapped[int] = mapped_column(Integer, server_default="0")
    timings: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"), comment="seconds per stage")
    error: Mapped[str | None] = mapped_column(Text)
    bank_id: Mapped[int | None] = mapped_column(
        ForeignKey("concept_bank.id"), comment="the bank image.scores are against"
    )


class Image(Base):
    """One image of a batch: its aligned vector, or the reason it failed.

    Written in bulk (``store.images``), so each per-row check counts. ``monitor_id`` is the batch's
    monitor, kept for queries by monitor: one foreign key on (batch_id, monitor_id) checks both and
    that they agree (two keys cost two lookups a row and let an image name another batch's monitor).
    Vectors stay in the row (``toast_tuple_target``): pgvector stores them uncompressed, and a 512-d
    vector is just over the default 2 kB threshold, so each row also went to the TOAST table and
    its index. Only vectors too wide for a page (near 2,000-d) still move out of line.
    ``scores`` are against the batch's bank (``batch.bank_id``), so they need no per-row key to
    a bank; scores against other banks are rows of ``image_score``.
    """

    __tablename__ = "image"
    __table_args__ = (
        ForeignKeyConstraint(["batch_id", "monitor_id"], ["batch.id", "batch.monitor_id"], ondelete="CASCADE"),
        UniqueConstraint("batch_id", "uri"),
        Index(
            "uq_image_batch_id_sha256_ok",
            "batch_id",
            "sha256",
            unique=True,
            postgresql_where=text("status = 'ok'"),
        ),
        Index("ix_image_monitor_id_created_at", "monitor_id", "created_at"),
        CheckConstraint(_one_of("status", IMAGE_STATUSES), name="status"),
        CheckConstraint(
            "(status = 'ok') = ((embedding IS NOT NULL OR embedding_dropped_at IS NOT NULL) "
            "AND failure_reason IS NULL)", name="ok_has_embedding"
        ),
        CheckConstraint("embedding IS NULL OR vector_dims(embedding) = dim", name="embedding_dim"),
        CheckConstraint("status = 'ok' OR scores IS NULL", name="failed_has_no_scores"),
        {"postgresql_with": {"toast_tuple_target": IMAGE_TOAST_TUPLE_TARGET}},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(Integer)
    monitor_id: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    n_bytes: Mapped[int | None] = mapped_column(BigInteger)
    meta: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    captured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(10))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    dim: Mapped[int | None] = mapped_column(Integer)
    embedding: Mapped[list[float] | None] = mapped_column(Vector(), comment="unit-norm aligned vector")
    embedding_dropped_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="when retention dropped the vector (scores stay)"
    )
    created_at: Mapped[datetime] = _created()
    scores: Mapped[list[float] | None] = mapped_column(
        ARRAY(REAL), comment="concept scores against batch.bank_id, in concept order"
    )


class ImageScore(Base):
    """The concept scores of one image against a bank other than its batch's (those are ``image.scores``),
    in the bank's concept order: batches rescored after their monitor's bank changed."""

    __tablename__ = "image_score"

    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("concept_bank.id", ondelete="CASCADE"), primary_key=True)
    scores: Mapped[list[float]] = mapped_column(ARRAY(REAL))


class Baseline(Base):
    """The reference distribution of a monitor's concept scores, tied to one aligner and bank."""

    __tablename__ = "baseline"
    __table_args__ = (
        Index("uq_baseline_monitor_id_active", "monitor_id", unique=True, postgresql_where=text("active")),
        CheckConstraint("mean_vector IS NULL OR vector_dims(mean_vector) = dim", name="mean_vector_dim"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitor.id", ondelete="CASCADE"), index=True)
    aligner_id: Mapped[int] = mapped_column(ForeignKey("aligner.id"))
    bank_id: Mapped[int] = mapped_column(ForeignKey("concept_bank.id"))
    active: Mapped[bool] = mapped_column(server_default=text("true"))
    batch_ids: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    n_images: Mapped[int] = mapped_column(Integer)
    reservoir_size: Mapped[int] = mapped_column(Integer)
    dim: Mapped[int] = mapped_column(Integer)
    mean_vector: Mapped[list[float] | None] = mapped_column(Vector())
    vectors: Mapped[bytes | None] = mapped_column(
        LargeBinary, comment="a uniform sample of the aligned vectors, float32 (n_vectors, dim), for root causes"
    )
    n_vectors: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created()


class BaselineConcept(Base):
    """A reservoir sample of one concept's scores in a baseline."""

    __tablename__ = "baseline_concept"

    baseline_id: Mapped[int] = mapped_column(ForeignKey("baseline.id", ondelete="CASCADE"), primary_key=True)
    concept_id: Mapped[int] = mapped_column(ForeignKey("concept.id", ondelete="CASCADE"), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, comment="scores seen; the sample may hold fewer")
    scores: Mapped[list[float]] = mapped_column(ARRAY(REAL))


class Audit(Base):
    """One comparison of a window of batches with a baseline."""

    __tablename__ = "audit"
    __table_args__ = (
        CheckConstraint(_one_of("status", AUDIT_STATUSES), name="status"),
        CheckConstraint("direction IS NULL OR vector_dims(direction) = dim", name="direction_dim"),
        CheckConstraint("residual IS NULL OR vector_dims(residual) = dim", name="residual_dim"),
        CheckConstraint("status <> 'done' OR (baseline_id IS NOT NULL AND dim IS NOT NULL)", name="done_has_baseline"),
        Index("ix_audit_monitor_id_started_at", "monitor_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitor.id", ondelete="CASCADE"))
    baseline_id: Mapped[int | None] = mapped_column(ForeignKey("baseline.id", ondelete="CASCADE"), index=True)
    window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    batch_ids: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    n_current: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(10), server_default="running")
    params: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    n_flagged: Mapped[int] = mapped_column(Integer, server_default="0")
    dim: Mapped[int | None] = mapped_column(Integer)
    direction: Mapped[list[float] | None] = mapped_column(
        Vector(), comment="window mean minus baseline mean of aligned vectors"
    )
    explanation: Mapped[dict[str, Any]] = mapped_column(
        server_default=text("'{}'::jsonb"), comment="roots, echoes, vector test, unlisted drift, words"
    )
    residual: Mapped[list[float] | None] = mapped_column(
        Vector(), comment="the part of the drift direction the roots do not explain"
    )
    report_error: Mapped[str | None] = mapped_column(
        Text, comment="why the report could not be written (cleared once it is)"
    )
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)


class AuditResult(Base):
    """One concept's test in one audit."""

    __tablename__ = "audit_result"

    audit_id: Mapped[int] = mapped_column(ForeignKey("audit.id", ondelete="CASCADE"), primary_key=True)
    concept_id: Mapped[int] = mapped_column(ForeignKey("concept.id", ondelete="CASCADE"), primary_key=True)
    ks_stat: Mapped[float] = mapped_column(Float)
    p_value: Mapped[float] = mapped_column(Float)
    q_value: Mapped[float] = mapped_column(Float, comment="p corrected for multiple testing")
    effect: Mapped[float] = mapped_column(Float, comment="window mean score minus baseline mean score")
    direction: Mapped[int] = mapped_column(SmallInteger, comment="+1 more of the concept, -1 less")
    flagged: Mapped[bool] = mapped_column()
    rank: Mapped[int | None] = mapped_column(Integer, comment="1 = largest effect among flagged")


class Alert(Base):
    """A notification on one channel: of an audit's drift, or of a monitor that stored no batch for too
    long (``no_data``, with no audit); failures are kept and retried."""

    __tablename__ = "alert"
    __table_args__ = (
        CheckConstraint(_one_of("status", ALERT_STATUSES), name="status"),
        CheckConstraint(_one_of("kind", ALERT_KINDS), name="kind"),
        CheckConstraint("kind = 'no_data' OR audit_id IS NOT NULL", name="drift_has_audit"),
        Index("ix_alert_created_at", "created_at"),  # the alerts dashboard's time range
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitor.id", ondelete="CASCADE"), index=True)
    audit_id: Mapped[int | None] = mapped_column(ForeignKey("audit.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20), server_default="drift",
                                      comment="drift (of an audit) or no_data (a monitor that stored nothing)")
    channel: Mapped[str] = mapped_column(String(200), comment="channel name; never the secret")
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Report(Base):
    """A concept-based report of an audit, with the drift directions decoded to text."""

    __tablename__ = "report"

    id: Mapped[int] = mapped_column(primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audit.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    decoded: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = _created()


class SearchStat(Base):
    """A cached corpus statistic for concept-logic search: one query vector's similarity mean and standard
    deviation over one corpus (a monitor's images, narrowed), valid while the corpus's fingerprint holds."""

    __tablename__ = "search_stat"

    corpus_key: Mapped[str] = mapped_column(String(64), primary_key=True, comment="sha256 of the corpus filters")
    vector_key: Mapped[str] = mapped_column(String(64), primary_key=True, comment="sha256 of the float32 vector")
    monitor_id: Mapped[int] = mapped_column(ForeignKey("monitor.id", ondelete="CASCADE"), index=True)
    n: Mapped[int] = mapped_column(Integer, comment="images in the corpus when computed")
    max_image_id: Mapped[int] = mapped_column(BigInteger, comment="the corpus's highest image id when computed")
    mean: Mapped[float] = mapped_column(Float)
    std: Mapped[float] = mapped_column(Float, comment="population standard deviation")
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
