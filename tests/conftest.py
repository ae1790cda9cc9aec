"""Shared fixtures: one throwaway embedded PostgreSQL (pgserver + pgvector) for the whole suite,
and a fresh database per test that needs one."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

# Under pytest-xdist each worker (and every t2c process it starts) uses one thread: two workers on
# two cores with two OpenMP threads each spin against each other and run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# Tests never reach the network: hub lookups must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One models directory for the whole test session, every xdist worker included: the quick world is
    built there once, and the decoders' vocabulary caches (33k words embedded per CLIP identity: 13 s on the
    tiny CLIP) fill once instead of once per test. Writers there are safe together: the world build holds a
    file lock, and every artifact is written under a temporary name and renamed into place."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    return shared / "world-models"


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own T2C_HOME and no external database unless it sets one (the models directory
    is the session's: ``shared_models_dir``); embedded servers (PostgreSQL, the local Prefect server)
    outlive their commands by design, so any a test started under tmp_path is stopped."""
    from t2c_monitor.prefect_server import RECORD, stop_server
    from t2c_monitor.settings import Settings, reset_settings_cache
    from t2c_monitor.store.embedded import stop_embedded

    monkeypatch.setenv("T2C_HOME", str(tmp_path / "t2c-home"))
    monkeypatch.setenv("T2C_MODELS", str(shared_models_dir(tmp_path_factory)))
    monkeypatch.delenv("T2C_DATABASE_URL", raising=False)
    reset_settings_cache()
    yield
    reset_settings_cache()
    for pid_file in tmp_path.glob("**/postmaster.pid"):
        stop_embedded(pid_file.parent)
    for record in tmp_path.glob(f"**/prefect/{RECORD}"):
        stop_server(Settings(home=record.parent.parent))


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of the suite's embedded PostgreSQL; it is deleted when the test session ends.

    Its data lives outside pytest's temp root, which pytest prunes to the newest few sessions:
    a second pytest run on the machine must not delete this server's files under it.
    """
    from t2c_monitor.store.embedded import start_embedded
    from t2c_monitor.store.engine import normalise_url

    root = Path(tempfile.mkdtemp(prefix="t2c-test-pg-"))
    return normalise_url(start_embedded(root / "data", delete_on_exit=True))


@pytest.fixture
def database_url(pg_server_url: str) -> Iterator[str]:
    """A new, empty database on the suite's server (with pgvector available), dropped afterwards."""
    url = make_database(pg_server_url)
    yield url
    drop_database(pg_server_url, url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database migrated to head."""
    from t2c_monitor.store import migrate
    from t2c_monitor.store.engine import make_engine

    eng = make_engine(database_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def insert_monitor_rows(engine: Engine, *, dim: int, batch: str = "day-1") -> dict[str, int]:
    """The rows a stored image hangs from (encoder, CLIP model, aligner, bank, monitor, batch),
    for tests of the store that need no real models; returns their ids."""
    from sqlalchemy.orm import Session

    from t2c_monitor.store import models as m

    with Session(engine) as s, s.begin():
        enc = m.Encoder(name="resnet10t", weights_sha256="a" * 64, feature_dim=512)
        clip = m.ClipModel(name="c", weights_sha256="b" * 64, embed_dim=dim)
        s.add_all([enc, clip])
        s.flush()
        aligner = m.Aligner(encoder_id=enc.id, clip_model_id=clip.id, method="exact", d_in=512, d_out=dim)
        bank = m.ConceptBank(name="b", version=1, clip_model_id=clip.id, dim=dim)
        s.add_all([aligner, bank])
        s.flush()
        monitor = m.Monitor(name="m", encoder_id=enc.id, clip_model_id=clip.id, aligner_id=aligner.id, bank_id=bank.id)
        s.add(monitor)
        s.flush()
        row = m.Batch(monitor_id=monitor.id, external_id=batch, source_uri="/inbox")
        s.add(row)
        s.flush()
        return {"monitor_id": monitor.id, "batch_id": row.id, "bank_id": bank.id}


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """For tests of tiny matrices: one thread is faster, and two OpenMP threads crawl when the
    machine is shared. Opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# a tiny but real monitor: timm encoder weights on disk, a custom open_clip model, a fitted aligner,
# a concept bank and a monitors.yaml, built once per session

# the tiny open_clip architecture (ViT width 64, 2 layers, 32 px; text width 64, 2 layers), the tiny bank and
# real PNGs: one definition, shared with the fuzz suite (which bench/fuzz.py also runs, without pytest)
from fuzz.tiny_monitor import TINY_BANK, TINY_CLIP, write_png  # noqa: E402


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    import numpy as np

    rng = np.random.default_rng(seed)
    colors = rng.integers(0, 256, (n, 3))
    return [write_png(folder / f"img-{i:04d}.png", tuple(int(c) for c in colors[i]), seed=seed * 100_000 + i)
            for i in range(n)]


@pytest.fixture(scope="session")
def tiny_clip_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip-config") / "t2c_test_tiny_clip.json"
    path.write_text(__import__("json").dumps(TINY_CLIP))
    return path


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_config: Path):
    """The tiny open_clip model, random weights, on CPU: built once for every test that only reads it."""
    from t2c_monitor.encoders import create_clip_model

    return create_clip_model(f"open_clip:{tiny_clip_config}", device="cpu")


@pytest.fixture(scope="session")
def tiny_monitor_dir(tmp_path_factory: pytest.TempPathFactory, tiny_clip_config: Path) -> Path:
    """Models for a monitor named ``tiny``, saved the way users save theirs, plus ``monitors.yaml``."""
    import torch
    from safetensors.torch import save_file

    from t2c_monitor.aligner import fit_on_images
    from t2c_monitor.encoders import create_clip_model, create_source_encoder

    root = tmp_path_factory.mktemp("tiny-monitor")
    encoder = create_source_encoder("timm:test_vit", device="cpu")
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, str(root / "encoder.safetensors"))
    clip = create_clip_model(f"open_clip:{tiny_clip_config}", device="cpu")
    torch.save(clip.model.state_dict(), root / "clip.pt")

    encoder = create_source_encoder(f"timm:test_vit@{root / 'encoder.safetensors'}", device="cpu")
    clip = create_clip_model(f"open_clip:{tiny_clip_config}@{root / 'clip.pt'}", device="cpu")
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in write_images(root / "train", 96, seed=1)]
    fit_on_images(encoder, clip, images, ridge=1e-3).save(root / "aligner")
    (root / "bank.yaml").write_text(TINY_BANK)
    (root / "monitors.yaml").write_text(
        "monitors:\n"
        "  - name: tiny\n"
        "    encoder: timm:test_vit@encoder.safetensors\n"
        f"    clip: open_clip:{tiny_clip_config}@clip.pt\n"
        "    aligner: aligner\n"
        "    bank: bank.yaml\n"
        "    ingest: {batch_size: 8, chunk_size: 16, decode_threads: 2}\n"
        "    audit: {evidently: false}  # evidently's run per audit is tested in test_reports.py (it takes seconds)\n"
    )
    return root


@pytest.fixture
def applied_monitor(database_url: str, tiny_monitor_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """A database (fresh, at head) in which the tiny monitor has been applied; yields the Database."""
    from t2c_monitor.apply import apply_monitor_file
    from t2c_monitor.settings import reset_settings_cache
    from t2c_monitor.store import open_database

    monkeypatch.setenv("T2C_DATABASE_URL", database_url)
    reset_settings_cache()
    db = open_database()
    apply_monitor_file(tiny_monitor_dir / "monitors.yaml", db, device="cpu")
    yield db
    db.engine.dispose()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test API server (a real one, on a temporary database) for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def apply_tiny(db, tiny_monitor_dir: Path, out_dir: Path, **sections) -> Path:
    """Re-apply the tiny monitor with extra config sections (``audit``, ``alerts``, ``schedules``,
    and a top-level ``channels``); returns the monitors file written."""
    import yaml
    from fuzz.tiny_monitor import monitor_document

    from t2c_monitor.apply import apply_monitor_file

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "monitors.yaml"
    path.write_text(yaml.safe_dump(monitor_document(tiny_monitor_dir, **sections)))
    apply_monitor_file(path, db, device="cpu")
    return path


@pytest.fixture
def monitored(applied_monitor, tmp_path):
    """The tiny monitor with two reference batches, a clean day and a dark day ingested."""
    import numpy as np

    from t2c_monitor.ingest import ingest

    db = applied_monitor
    for name, seed in (("ref-1", 1), ("ref-2", 2), ("clean", 3)):
        write_images(tmp_path / name, 60, seed=seed)
        ingest(db, "tiny", tmp_path / name, batch_id=name)
    rng = np.random.default_rng(4)
    for i in range(60):  # a night shift: every picture dark
        write_png(tmp_path / "dark" / f"img-{i:03d}.png", tuple(int(c) for c in rng.integers(0, 25, 3)), seed=900 + i)
    ingest(db, "tiny", tmp_path / "dark", batch_id="dark")
    return db


@pytest.fixture(scope="session")
def quick_world(tmp_path_factory):
    """The quick shapes world, built once per test session (about a minute and a half)."""
    from t2c_monitor.world.build import build_world

    # one thread: when other test processes share the cores, OpenMP's spinning makes two threads
    # several times slower; alone on 2 cores the quick world builds in about a minute either way
    # under pytest-xdist the workers share one models directory: the first builds the world while
    # build_world's file lock holds the others, which then load it
    return build_world(seed=0, quick=True, models_dir=shared_models_dir(tmp_path_factory), progress=False,
                       threads=1)


@pytest.fixture(scope="session")
def quick_aligner(quick_world, tmp_path_factory):
    """The exact aligner from the quick world's source encoder into its CLIP, fitted once per session."""
    from t2c_monitor.world.drift_check import fit_world_aligner

    return fit_world_aligner(quick_world, tmp_path_factory.mktemp("quick-aligner"), n_fit=1500)


@pytest.fixture(scope="module")
def fuzz_world(pg_server_url: str, tiny_monitor_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny monitor stored under hostile names, with batches, a baseline, audits and reports
    (tests/fuzz/world.py), in a database of its own, once per fuzz test module."""
    from fuzz.world import FuzzWorld

    url = make_database(pg_server_url)
    world = FuzzWorld(tmp_path_factory.mktemp("fuzz"), url, tiny_monitor_dir)
    with world.active():
        world.populate()
    yield world
    if world.receiver:
        world.receiver.close()
    world.engine.dispose()
    drop_database(pg_server_url, url)


@pytest.fixture
def active_fuzz_world(fuzz_world, monkeypatch: pytest.MonkeyPatch):
    """``fuzz_world`` with its settings active (over the suite's per-test home), in its work folder."""
    from t2c_monitor.settings import reset_settings_cache

    for key, value in fuzz_world.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(fuzz_world.work)
    reset_settings_cache()
    yield fuzz_world
    reset_settings_cache()


def make_database(pg_server_url: str) -> str:
    """A new, empty database on the suite's server; its URL (drop it with ``drop_database``)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(pg_server_url: str, url: str) -> None:
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


# Under pytest-xdist (`make test`: two workers, a file at a time, xdist's own reordering off) the slowest
# files go first, so the two workers finish together instead of one running a long file alone at the
# end. The first needs no quick world and the second builds it, so neither waits for the other.
SLOW_FILES_FIRST = ("test_schedules.py", "test_faults_processes.py", "test_faults.py", "test_work_pool.py",
                    "test_world_drift.py", "test_readme_walkthrough.py", "test_alerts.py", "test_faults_serve.py",
                    "test_reports.py", "test_audit_flow.py", "test_audit.py", "test_prefect_server.py",
                    "test_cli_ingest.py", "test_ingest_flow.py", "test_world_search.py", "test_dashboards.py",
                    "test_retention.py", "test_decode_world.py", "test_world.py", "test_fuzz.py", "test_fuzz_corpus.py",
                    "test_secrets_sweep.py", "test_hostile_input.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable within a file
