"""The demo: a week of a monitored vision model in the shapes world, end to end.

    build the world (cached) -> fit the aligner (cached) -> apply monitor "shapes" -> ingest a
    baseline and build it -> for each day: ingest the day's batch, run the scheduled audit ->
    the day with a planted shift raises an alert (to a local webhook receiver the demo starts,
    and a file) -> the next day, the same ongoing drift is held back by the quiet period.

Everything runs as real Prefect flows in Prefect's local mode on the embedded PostgreSQL, with
the monitor declared in ``$T2C_HOME/demo/monitors.yaml``, the very file a user would write; its
deployments are the ones ``prefect.yaml`` declares. Images are cached with their recipe; a
rerun stores no image twice and starts the demo monitor's audits afresh.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEMO_MONITOR = "shapes"
WEBHOOK_ENV = "T2C_DEMO_WEBHOOK_URL"
BASELINE = ("baseline", 2000, 1, None)
# (batch id, images, seed, planted shift): three ordinary days, then half the pictures come from
# a camera out on the grass, and it stays there the next day.
DAYS = (
    ("day-1", 500, 11, None),
    ("day-2", 500, 12, None),
    ("day-3", 500, 13, None),
    ("day-4", 500, 14, "background=grass:0.5"),
    ("day-5", 500, 15, "background=grass:0.5"),
)
QUICK_SIZES = {"baseline": 600, "day": 200}


def demo_monitor_document(*, encoder: str, clip: str, aligner: str, bank: str) -> dict[str, Any]:
    """The demo's monitors file: one monitor with an hourly audit, an inbox ingested every ten
    minutes, and two alert channels (a webhook whose URL is a secret in the environment, and a file)."""
    return {
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
            "schedules": {"audit_cron": "0 * * * *", "timezone": "UTC", "inbox": "$T2C_HOME/demo/inbox",
                          "ingest_interval": "10m"},
        }],
    }


@dataclass
class DayResult:
    batch: str
    images: int
    shift: str | None
    flagged: list[str]
    alerts: list[str]
    report: str | None


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


def run_demo(*, quick: bool = False, progress: bool = True, log: Any = print) -> DemoResult:
    """Run the story (see the module docstring) and return what happened each day."""
    import time

    from flows.audit import AuditParams, BaselineParams, audit_flow, baseline_flow
    from flows.ingest import IngestParams, ingest_flow
    from t2c_monitor.monitors import load_models, load_monitor_file
    from t2c_monitor.receiver import WebhookReceiver
    from t2c_monitor.settings import get_settings
    from t2c_monitor.store import open_database
    from t2c_monitor.store.audits import delete_audits
    from t2c_monitor.store.monitors import get_monitor, record_monitor
    from t2c_monitor.world.build import build_world
    from t2c_monitor.world.drift_check import fit_world_aligner
    from t2c_monitor.world.evaluate import default_bank_path

    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

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

    monitor_file = root / "monitors.yaml"
    document = demo_monitor_document(encoder=world.source_spec, clip=world.clip_spec, aligner=str(aligner),
                                     bank=str(default_bank_path()))
    monitor_file.write_text("# The demo's monitor, as a user would declare it (t2c monitor apply FILE)\n"
                            + yaml.safe_dump(document, sort_keys=False))
    (config,) = load_monitor_file(monitor_file)
    with db.session() as session:
        record_monitor(session, load_models(config))
    with db.session() as session:
        monitor_id = get_monitor(session, DEMO_MONITOR).id
    with db.engine.begin() as conn:
        cleared = delete_audits(conn, monitor_id)
    if cleared:
        log(f"cleared {cleared} audits of an earlier demo run of monitor {DEMO_MONITOR}")
    log(f"monitor {DEMO_MONITOR} applied from {monitor_file}")

    def size(name: str, n: int) -> int:
        return (QUICK_SIZES["baseline"] if name == "baseline" else QUICK_SIZES["day"]) if quick else n

    name, n, seed, shift = BASELINE
    baseline_dir = _images(root, name, size(name, n), seed, shift, progress)
    days = [(d, _images(root, d, size(d, n), s, sh, progress), sh) for d, n, s, sh in DAYS]
    lap("images")

    schedules = config.schedules
    inbox = root / "inbox"  # what the monitor's `inbox: $T2C_HOME/demo/inbox` names; `t2c serve` watches it
    inbox.mkdir(exist_ok=True)
    result = DemoResult(monitor_file=str(monitor_file), database_url=db.url, baseline_images=0, inbox=str(inbox),
                        ingest_interval=document["monitors"][0]["schedules"]["ingest_interval"],
                        audit_schedule=f"on cron '{schedules.audit_cron}' ({schedules.timezone})")
    with WebhookReceiver(path="/t2c-alerts") as receiver:
        os.environ[WEBHOOK_ENV] = receiver.url  # the secret lives in this process's environment only
        stored = ingest_flow(IngestParams(source=str(baseline_dir), monitor=DEMO_MONITOR, batch_id="baseline"))
        baseline = baseline_flow(BaselineParams(monitor=DEMO_MONITOR, batches=["baseline"]))
        result.baseline_images = baseline["n_images"]
        log(f"baseline: {stored['n_ok']} images stored, {baseline['n_sampled']} scores kept per concept")
        lap("baseline")
        for day, folder, planted in days:
            batch = ingest_flow(IngestParams(source=str(folder), monitor=DEMO_MONITOR, batch_id=day))
            # the hourly deployment's flow, on this day's batch (named: a rerun's batches keep their first times)
            audit = audit_flow(AuditParams(monitor=DEMO_MONITOR, batches=[day]))
            flagged = [f"{'more' if f['direction'] > 0 else 'less'} '{f['name']}'" for f in audit["flagged"]]
            alerts = [f"{a['channel']}: {a['status']}" for a in audit["alerts"]]
            result.days.append(DayResult(day, batch["n_ok"], planted, flagged, alerts, audit["report"]))
            lap(day)
        result.received = list(receiver.bodies)
    os.environ.pop(WEBHOOK_ENV, None)
    result.seconds = seconds
    return result
