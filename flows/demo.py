"""The demo's week as real Prefect flow runs (``t2c demo``).

    prepare (world, aligner, monitor "shapes", images; t2c_monitor.demo) -> ingest a baseline and
    build it -> for each day: ingest the day's batch, run the scheduled audit -> the day with a
    planted shift raises an alert (to a local webhook receiver the demo starts, and a file) ->
    the next day, the same ongoing drift is held back by the quiet period -> on the last day a
    shift in something the bank has no concept for is reported anyway, in words.

The flows report to whatever Prefect API this process uses (``t2c demo`` points it at the local
Prefect server first, so the week's runs stay in its UI). A rerun stores no image twice and
starts the demo monitor's audits afresh.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flows.audit import AuditParams, BaselineParams, audit_flow, baseline_flow
from flows.ingest import IngestParams, ingest_flow
from t2c_monitor.decode.drift import DriftWords
from t2c_monitor.demo import DEMO_MONITOR, WEBHOOK_ENV, DayResult, DemoResult, prepare_demo
from t2c_monitor.durations import format_duration
from t2c_monitor.wording import concept_change


def run_demo(*, quick: bool = False, progress: bool = True, log: Any = print) -> DemoResult:
    """Run the story (see the module docstring) and return what happened each day."""
    from t2c_monitor.receiver import WebhookReceiver

    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    setup = prepare_demo(quick=quick, progress=progress, log=log, lap=lap)
    schedules = setup.config.schedules
    result = DemoResult(monitor_file=str(setup.monitor_file), database_url=setup.database_url, baseline_images=0,
                        inbox=str(setup.inbox), ingest_interval=format_duration(schedules.ingest_interval),
                        audit_schedule=f"on cron '{schedules.audit_cron}' ({schedules.timezone})")
    with WebhookReceiver(path="/t2c-alerts") as receiver:
        os.environ[WEBHOOK_ENV] = receiver.url  # the secret lives in this process's environment only
        try:
            stored = ingest_flow(IngestParams(source=str(setup.baseline_images), monitor=DEMO_MONITOR,
                                              batch_id="baseline"))
            baseline = baseline_flow(BaselineParams(monitor=DEMO_MONITOR, batches=["baseline"]))
            result.baseline_images = baseline["n_images"]
            log(f"baseline: {stored['n_ok']} images stored, {baseline['n_sampled']} scores kept per concept")
            lap("baseline")
            for day, folder, planted in setup.days:
                batch = ingest_flow(IngestParams(source=str(folder), monitor=DEMO_MONITOR, batch_id=day))
                # the hourly deployment's flow, on this day's batch (named: a rerun's batches keep their first times)
                audit = audit_flow(AuditParams(monitor=DEMO_MONITOR, batches=[day]))
                flagged = [concept_change(f["name"], f["direction"], quoted=True) for f in audit["flagged"]]
                by_name = {f["name"]: f for f in audit["flagged"]}
                roots = [concept_change(n, by_name[n]["direction"], quoted=True) for n in audit["roots"]]
                words = audit["words"] or {}
                said = DriftWords.from_dict(words).text() if words else ""
                alerts = [f"{a['channel']}: {a['status']}" for a in audit["alerts"]]
                result.days.append(DayResult(day, batch["n_ok"], planted, flagged, alerts, audit["report"],
                                             roots=roots, words=said,
                                             unlisted=list(words.get("unlisted") or ["?"]) if audit["unlisted"]
                                             else []))
                lap(day)
            result.received = list(receiver.bodies)
        finally:
            os.environ.pop(WEBHOOK_ENV, None)
    result.seconds = seconds
    return result

