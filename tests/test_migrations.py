"""The schema is created and changed only through Alembic, and agrees with the models."""

from __future__ import annotations

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from t2c_monitor.store import migrate
from t2c_monitor.store import models as m
from t2c_monitor.store.engine import make_engine

TABLES = {
    "encoder", "clip_model", "aligner", "concept_bank", "concept", "monitor", "batch", "image",
    "image_score", "baseline", "baseline_concept", "audit", "audit_result", "alert", "report", "search_stat",
}


def _unit(dim: int, seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def _fill_every_table(session: Session, dim: int = 8) -> None:
    """One row in every table, linked as the service links them."""
    enc = m.Encoder(name="resnet10t", weights_ref=None, weights_sha256="a" * 64, feature_dim=512)
    clip = m.ClipModel(name="shapes-clip", pretrained="/w/clip.pt", weights_sha256="b" * 64, embed_dim=dim)
    session.add_all([enc, clip])
    session.flush()
    aligner = m.Aligner(encoder_id=enc.id, clip_model_id=clip.id, method="exact", d_in=512, d_out=dim)
    bank = m.ConceptBank(name="world", version=1, clip_model_id=clip.id, dim=dim, templates=["a photo of {}."])
    rescored = m.ConceptBank(name="world", version=2, clip_model_id=clip.id, dim=dim)
    session.add_all([aligner, bank, rescored])
    session.flush()
    concept = m.Concept(bank_id=bank.id, position=0, name="night", phrasings=["at night"], vector=_unit(dim, 0))
    monitor = m.Monitor(
        name="shapes", encoder_id=enc.id, clip_model_id=clip.id, aligner_id=aligner.id, bank_id=bank.id
    )
    session.add_all([concept, monitor])
    session.flush()
    batch = m.Batch(monitor_id=monitor.id, external_id="day-1", source_uri="file:///inbox/day-1", status="stored",
                    bank_id=bank.id)
    session.add(batch)
    session.flush()
    ok = m.Image(
        batch_id=batch.id, monitor_id=monitor.id, uri="a.png", sha256="c" * 64, status="ok", dim=dim,
        embedding=_unit(dim, 1), meta={"source": "cam-3"}, scores=[0.25],
    )
    bad = m.Image(batch_id=batch.id, monitor_id=monitor.id, uri="b.jpg", status="failed", failure_reason="truncated")
    baseline = m.Baseline(
        monitor_id=monitor.id, aligner_id=aligner.id, bank_id=bank.id, n_images=1, reservoir_size=100, dim=dim,
        mean_vector=_unit(dim, 2),
    )
    session.add_all([ok, bad, baseline])
    session.flush()
    audit = m.Audit(monitor_id=monitor.id, baseline_id=baseline.id, dim=dim, direction=_unit(dim, 3), status="done")
    session.add_all([
        m.ImageScore(image_id=ok.id, bank_id=rescored.id, scores=[0.5]),  # scored again against another bank
        m.BaselineConcept(baseline_id=baseline.id, concept_id=concept.id, n=1, scores=[0.2]),
        audit,
    ])
    session.flush()
    session.add_all([
        m.AuditResult(audit_id=audit.id, concept_id=concept.id, ks_stat=0.4, p_value=1e-9, q_value=1e-8,
                      effect=0.05, direction=1, flagged=True, rank=1),
        m.Alert(monitor_id=monitor.id, audit_id=audit.id, channel="oncall", payload={"flagged": ["night"]},
                status="sent"),
        m.Alert(monitor_id=monitor.id, audit_id=None, kind="no_data", channel="oncall",
                payload={"subject": "no images stored for 1d 2h"}, status="sent"),
        m.Report(audit_id=audit.id, path="/reports/1.html", decoded=["a photo at night"]),
    ])


def _tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_exactly_one_head():
    assert len(migrate.heads()) == 1


def test_upgrade_downgrade_upgrade_with_rows(database_url):
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    assert _tables(engine) == TABLES
    assert migrate.status(engine).at_head
    with Session(engine) as session, session.begin():
        _fill_every_table(session)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM image")).scalar() == 2

    migrate.downgrade(engine, "base")
    assert _tables(engine) == set()
    assert migrate.current(engine) is None

    migrate.upgrade(engine)
    assert _tables(engine) == TABLES
    with Session(engine) as session, session.begin():
        _fill_every_table(session)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM image")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM audit_result")).scalar() == 1
    engine.dispose()


def test_models_and_migrated_schema_agree(engine):
    """Autogenerate finds nothing to do: the revisions create exactly what the models describe."""
    from t2c_monitor.store.vectors import ensure_hnsw_index

    with engine.begin() as conn:
        ensure_hnsw_index(conn, 8)  # run-time indexes must not count as drift
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": migrate.include_object, "compare_type": True}
        )
        assert compare_metadata(context, m.Base.metadata) == []


def test_upgrade_is_idempotent_and_concurrent_safe(engine):
    migrate.upgrade(engine)
    migrate.upgrade(engine)
    assert migrate.status(engine).at_head


def test_constraints_protect_the_data(engine):
    with Session(engine) as session, session.begin():
        _fill_every_table(session)
    ids = {}
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id AS batch_id, monitor_id FROM batch")).mappings().one()

    def insert_image(**overrides):
        row = dict(uri="x.png", status="ok", dim=8, embedding=_unit(8, 9), sha256="d" * 64, **ids)
        row.update(overrides)
        with Session(engine) as session, session.begin():
            session.add(m.Image(**row))

    with pytest.raises(IntegrityError, match="ck_image_embedding_dim"):
        insert_image(dim=16)
    with pytest.raises(IntegrityError, match="ck_image_ok_has_embedding"):
        insert_image(embedding=None)
    with pytest.raises(IntegrityError, match="ck_image_status"):
        insert_image(status="maybe", embedding=None, dim=None, failure_reason="?")
    with pytest.raises(IntegrityError, match="uq_image_batch_id_sha256_ok"):
        insert_image(sha256="c" * 64)  # the same content stored twice in one batch
    # a duplicate recorded as failed is allowed: it keeps the reason without a second vector
    insert_image(sha256="c" * 64, status="failed", embedding=None, dim=None, failure_reason="duplicate of a.png")
    with pytest.raises(IntegrityError, match="uq_image_batch_id_uri"):
        insert_image(uri="a.png", sha256="e" * 64)
    with pytest.raises(IntegrityError, match="fk_image_batch_id_batch"):  # an image of another monitor's batch
        insert_image(uri="y.png", sha256="f" * 64, monitor_id=ids["monitor_id"] + 1)
    with pytest.raises(IntegrityError, match="ck_batch_status"), Session(engine) as session, session.begin():
        session.add(m.Batch(monitor_id=ids["monitor_id"], external_id="d2", source_uri="x", status="lost"))



def test_0003_moves_scores_against_the_batch_bank_between_the_image_row_and_image_score(engine):
    """Downgrade puts image.scores back as image_score rows of the batch's bank; upgrade moves the
    rows of each batch's (monitor's) bank into the image rows and leaves other banks' rows alone."""
    with Session(engine) as session, session.begin():
        _fill_every_table(session)
    scores = "SELECT c.version, s.scores FROM image_score s JOIN concept_bank c ON c.id = s.bank_id ORDER BY 1"
    migrate.downgrade(engine, "0002")
    with engine.connect() as conn:
        assert conn.execute(text(scores)).all() == [(1, [0.25]), (2, [0.5])]

    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT b.bank_id = m.bank_id FROM batch b JOIN monitor m ON m.id = b.monitor_id")
                            ).scalar_one() is True
        assert conn.execute(text("SELECT uri, scores FROM image ORDER BY uri")).all() == [("a.png", [0.25]),
                                                                                          ("b.jpg", None)]
        assert conn.execute(text(scores)).all() == [(2, [0.5])]
    with pytest.raises(IntegrityError, match="ck_image_failed_has_no_scores"), engine.begin() as conn:
        conn.execute(text("UPDATE image SET scores = ARRAY[0.1]::real[] WHERE status = 'failed'"))


def test_0009_gives_every_alert_its_monitor_and_lets_only_no_data_alerts_lack_an_audit(engine):
    """Upgrading fills each existing alert's monitor from its audit; a drift alert still needs its audit;
    downgrading drops the no-data alerts, which had no place before."""
    with Session(engine) as session, session.begin():
        _fill_every_table(session)
    migrate.downgrade(engine, "0008")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alert")).scalar_one() == 1, "the no-data alert went"
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT al.kind, al.monitor_id = a.monitor_id FROM alert al "
                                 "JOIN audit a ON a.id = al.audit_id")).all() == [("drift", True)]
    with pytest.raises(IntegrityError, match="ck_alert_drift_has_audit"), engine.begin() as conn:
        conn.execute(text("INSERT INTO alert (monitor_id, channel, payload, status) "
                          "SELECT id, 'oncall', '{}'::jsonb, 'sent' FROM monitor"))
