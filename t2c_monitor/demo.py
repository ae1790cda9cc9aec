"""The demo's world and monitor: what ``flows.demo.run_demo`` (``t2c demo``) runs its week on.

``prepare_demo`` builds the shapes world (cached), fits the aligner (cached), writes
``$T2C_HOME/demo/monitors.yaml`` (the very file a user would write; its deployments are the ones
``prefect.yaml`` declares), applies it, clears the demo monitor's earlier audits and writes the
week's images (cached with their recipe). The week itself runs as real Prefect flows, so it
lives in ``flows/demo.py``: the library never imports ``flows``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEMO_MONITOR = "shapes"
WEBHOOK_ENV = "T2C_DEMO_WEBHOOK_URL"
BASELINE = ("baseline", 2000, 1, None)
# (batch id, images, seed, planted shift): three ordinary days, then half the pictures come from
# a camera out on the grass, and it stays there the next day; on the last day the camera is back,
# but half the pictures are taken in falling snow, which the demo's bank has no concept for.
DAYS = (
    ("day-1", 500, 11, None),
    ("day-2", 500, 12, None),
    ("day-3", 500, 13, None),
    ("day-4", 500, 14, "background=grass:0.5"),
    ("day-5", 500, 15, "background=grass:0.5"),
    ("day-6", 500, 16, "snow=0.5"),
)
UNLISTED = "snow"  # left out of the demo's bank (the world's default bank less this concept)
QUICK_SIZES = {"baseline": 600, "day": 200}


def demo_monitor_document(*, encoder: str, clip: str, aligner: str, bank: str,
                          decode: dict[str, Any] | None = None) -> dict[str, Any]:
    """The demo's monitors file: one monitor with an hourly audit, an inbox ingested every ten
    minutes, two alert channels (a webhook whose URL is a secret in the environment, and a file),
    and the world's decoders (``decode``, from ``World.decode_section``)."""
    document = {
        "channels": {
            "oncall": {"type": "webhook", "url_env": WEBHOOK_ENV},
            "log": {"type": "file", "path": "alerts.jsonl"},
        },
        "monitors": [{
            "name": DEMO_MONITOR,
            "description": "shape classifier of the shapes world, watched in CLIP's words",
            "encoder": encoder, "clip": clip, "aligner": aligner, "bank": bank,
            "ingest": {"batch_size": 128, "chunk_size": 512, "decode_threads": 2},
            "audit": {"last": 1, "alpha": 0.005, "correction": "bh", "min_ks": 0.02, "min_effect_size": 0.1,
                      "reservoir": 100000},
            "alerts": {"channels": ["oncall", "log"], "quiet_period": "6h", "retries": 3, "retry_delay": "2s"},
            "schedules": {"audit_cron": "0 * * * *", "report_cron": "0 7 * * *", "timezone": "UTC",
                          "inbox": "$T2C_HOME/demo/inbox", "ingest_interval": "10m"},
        }],
    }
    if decode:
        document["monitors"][0]["decode"] = decode
    return document


@dataclass
class DayResult:
    batch: str
    images: int
    shift: str | None
    flagged: list[str]
    alerts: list[str]
    report: str | None
    roots: list[str] = field(default_factory=list)  # "more 'grass'"
    words: str = ""  # the drift in words
    unlisted: list[str] = field(default_factory=list)  # words of a shift no concept names (empty: none)


@dataclass
class DemoResult:
    monitor_file: str
    database_url: str
    baseline_images: int
    days: list[DayResult] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    inbox: str = ""
    ingest_interval: str = ""
    audit_schedule: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "days": [d.__dict__ for d in self.days]}


def _images(root: Path, name: str, n: int, seed: int, shift: str | None, progress: bool) -> Path:
    """The batch's images on disk, written once per recipe."""
    from t2c_monitor.world.build import WORLD_CODE_VERSION
    from t2c_monitor.world.generate import write_images

    out = root / "images" / name
    recipe = {"n": n, "seed": seed, "shift": shift, "world_code": WORLD_CODE_VERSION}
    stamp = out / "recipe.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == recipe):
        write_images(out, n, seed=seed, shift=[shift] if shift else None, progress=progress)
        stamp.write_text(json.dumps(recipe))
    return out


@dataclass(frozen=True)
class DemoSetup:
    """Everything the demo's week needs, ready: the monitor applied, the images on disk."""

    database_url: str
    monitor_file: Path
    config: Any  # monitors.MonitorConfig
    baseline_images: Path
    days: list[tuple[str, Path, str | None]]  # (batch id, folder, planted shift)
    inbox: Path


def prepare_demo(*, quick: bool = False, progress: bool = True, log: Any = print,
                 lap: Any = lambda _: None) -> DemoSetup:
    """Build or reuse the world and aligner, apply the demo monitor and write the week's images."""
    from t2c_monitor.apply import apply_monitor
    from t2c_monitor.errors import ConfigError
    from t2c_monitor.monitors import load_monitor_file
    from t2c_monitor.settings import get_settings
    from t2c_monitor.store import open_database
    from t2c_monitor.store.audits import delete_audits, delete_monitor_data, stored_widths
    from t2c_monitor.store.monitors import get_monitor
    from t2c_monitor.world.build import build_world
    from t2c_monitor.world.drift_check import fit_world_aligner
    from t2c_monitor.world.evaluate import default_bank_path

    settings = get_settings()
    root = settings.home / "demo"
    root.mkdir(parents=True, exist_ok=True)
    db = open_database(settings)
    log(f"database: {db.url}")
    world = build_world(seed=0, quick=quick, progress=progress)
    lap("world")
    aligner = fit_world_aligner(world, root / ("aligner-quick" if quick else "aligner"),
                                n_fit=1500 if quick else 10_000, progress=progress)
    lap("aligner")

    bank = root / "bank.yaml"  # the world's default bank without the concept of the last day's shift
    definition = yaml.safe_load(default_bank_path().read_text())
    definition["concepts"] = [c for c in definition["concepts"] if c["name"] != UNLISTED]
    bank.write_text(f"# The world's default bank without '{UNLISTED}': the demo's last day plants it\n"
                    + yaml.safe_dump(definition, sort_keys=False))
    monitor_file = root / "monitors.yaml"
    document = demo_monitor_document(encoder=world.source_spec, clip=world.clip_spec, aligner=str(aligner),
                                     bank=str(bank), decode=world.decode_section())
    monitor_file.write_text("# The demo's monitor, as a user would declare it (t2c monitor apply FILE)\n"
                            + yaml.safe_dump(document, sort_keys=False))
    (config,) = load_monitor_file(monitor_file)
    with db.session() as session:
        try:
            before = get_monitor(session, DEMO_MONITOR)
        except ConfigError:
            before = None
    apply_monitor(db, config)
    with db.session() as session:
        after = get_monitor(session, DEMO_MONITOR)
    with db.engine.begin() as conn:
        moved = before is not None and (before.aligner_id, before.clip) != (after.aligner_id, after.clip)
        if moved or stored_widths(conn, after.id) - {after.clip.dim}:
            # the other world (quick or full): its vectors live in another space, so the story starts afresh
            cleared = delete_monitor_data(conn, after.id)
            log(f"cleared {cleared} batches of an earlier demo run on the {'full' if quick else 'quick'} world")
        elif cleared := delete_audits(conn, after.id):
            log(f"cleared {cleared} audits of an earlier demo run of monitor {DEMO_MONITOR}")
    log(f"monitor {DEMO_MONITOR} applied from {monitor_file}")

    def size(name: str, n: int) -> int:
        return (QUICK_SIZES["baseline"] if name == "baseline" else QUICK_SIZES["day"]) if quick else n

    name, n, seed, shift = BASELINE
    baseline_dir = _images(root, name, size(name, n), seed, shift, progress)
    days = [(d, _images(root, d, size(d, n), s, sh, progress), sh) for d, n, s, sh in DAYS]
    lap("images")
    inbox = root / "inbox"  # what the monitor's `inbox: $T2C_HOME/demo/inbox` names; `t2c serve` watches it
    inbox.mkdir(exist_ok=True)
    db.engine.dispose()
    return DemoSetup(database_url=db.url, monitor_file=monitor_file, config=config, baseline_images=baseline_dir,
                     days=days, inbox=inbox)
