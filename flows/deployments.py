"""Deployments from monitor configs: the scheduled audit, report job, inbox ingest and retention of each monitor.

``monitor_deployments`` turns a monitor's ``schedules`` section into Prefect deployments;
``serve_monitors`` (``t2c serve``) serves every recorded monitor's deployments in one process,
the embedded default; ``prefect_yaml`` writes the same deployments as a ``prefect.yaml`` for
work pools (``prefect deploy --all``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from t2c_monitor.durations import format_duration
from t2c_monitor.monitors import MonitorConfig

# Module paths, not file paths: a flow run imports its flow from the installed package, so a worker needs
# t2c-monitor installed (a wheel is enough), not a checkout of this repository.
AUDIT_ENTRYPOINT = "flows.audit.audit_flow"
INBOX_ENTRYPOINT = "flows.ingest.ingest_inbox_flow"
REPORT_ENTRYPOINT = "flows.report.decode_report_flow"
RETENTION_ENTRYPOINT = "flows.retention.retention_flow"
DEFAULT_WORK_POOL = "t2c-pool"


def deployment_specs(config: MonitorConfig) -> list[dict[str, Any]]:
    """What each of the monitor's deployments is: flow entrypoint, name, schedule, parameters."""
    schedules = config.schedules
    specs = []
    if schedules.audit_cron:
        specs.append({
            "entrypoint": AUDIT_ENTRYPOINT, "name": f"audit-{config.name}",
            "description": f"Drift audit of monitor {config.name} against its baseline; alerts its channels. "
                           "Ends without an audit when no batch arrived since the last one.",
            "schedule": {"cron": schedules.audit_cron, "timezone": schedules.timezone},
            "parameters": {"params": {"monitor": config.name, "skip_unchanged": True}},
        })
    if schedules.report_cron:
        specs.append({
            "entrypoint": REPORT_ENTRYPOINT, "name": f"report-{config.name}",
            "description": f"Report job of monitor {config.name}: words and reports of audits that lack them, "
                           "and a digest of the period.",
            "schedule": {"cron": schedules.report_cron, "timezone": schedules.timezone},
            "parameters": {"params": {"monitor": config.name}},
        })
    if config.retention.vectors is not None:
        specs.append({
            "entrypoint": RETENTION_ENTRYPOINT, "name": f"retention-{config.name}",
            "description": f"Drop the vectors of {config.name}'s images older than "
                           f"{format_duration(config.retention.vectors)} (scores, batches and audits stay).",
            "schedule": {"cron": config.retention.cron, "timezone": schedules.timezone},
            "parameters": {"params": {"monitor": config.name}},
        })
    if schedules.inbox and schedules.ingest_interval:
        seconds = schedules.ingest_interval.total_seconds()
        specs.append({
            "entrypoint": INBOX_ENTRYPOINT, "name": f"ingest-{config.name}",
            "description": f"Ingest the new files of {schedules.inbox} for monitor {config.name}.",
            "schedule": {"interval": seconds, "timezone": schedules.timezone},
            "parameters": {"params": {"monitor": config.name, "source": schedules.inbox, "interval_s": seconds}},
        })
    return specs


def monitor_deployments(config: MonitorConfig) -> list[Any]:
    """The monitor's ``RunnerDeployment`` objects (to ``serve`` or ``.apply()``).

    Their entrypoints are module paths (``flows.audit.audit_flow``), so a flow run loads its flow
    by import wherever t2c-monitor is installed (a wheel too) and whatever directory serves it.
    """
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron, Interval

    from flows.audit import audit_flow
    from flows.ingest import ingest_inbox_flow
    from flows.report import decode_report_flow
    from flows.retention import retention_flow

    flows = {AUDIT_ENTRYPOINT: audit_flow, INBOX_ENTRYPOINT: ingest_inbox_flow, REPORT_ENTRYPOINT: decode_report_flow,
             RETENTION_ENTRYPOINT: retention_flow}
    out = []
    for spec in deployment_specs(config):
        when = spec["schedule"]
        schedule = (Cron(when["cron"], timezone=when["timezone"]) if "cron" in when
                    else Interval(when["interval"], timezone=when["timezone"]))
        out.append(flows[spec["entrypoint"]].to_deployment(
            name=spec["name"], schedules=[schedule], parameters=spec["parameters"], description=spec["description"],
            tags=["t2c", config.name], entrypoint_type=EntrypointType.MODULE_PATH))
    return out


def recorded_configs(names: list[str] | None = None) -> list[MonitorConfig]:
    """The configs of the recorded monitors (all, or the named ones)."""
    from t2c_monitor.errors import ConfigError
    from t2c_monitor.store import open_database
    from t2c_monitor.store.monitors import get_monitor, list_monitors

    db = open_database()
    with db.session() as session:
        wanted = names or [m.name for m in list_monitors(session)]
        if not wanted:
            raise ConfigError("No monitors are recorded: declare them in a YAML file and run `t2c monitor apply FILE`.")
        return [get_monitor(session, n).config for n in wanted]


@dataclass(frozen=True)
class ServedDeployment:
    """One deployment ``t2c serve`` serves: its full name, its schedule in words and its next run."""

    name: str
    schedule: str
    next_run: datetime | None


def serve_monitors(names: list[str] | None = None, *, on_ready: Callable[[list[ServedDeployment]], None] | None = None,
                   stop_timeout_s: float = 10.0) -> None:
    """Serve the scheduled deployments of the recorded monitors until SIGINT or SIGTERM.

    Runs come from the Prefect server's scheduler (so the process must talk to a server whose
    services run: see ``t2c_monitor.prefect_server``); each run executes in its own process.
    ``on_ready`` gets the served deployments once they are registered. A signal stops polling,
    cancels runs in flight (Prefect marks them cancelled; a rerun of an ingest completes its
    batch), pauses the schedules so that no backlog of late runs piles up while nobody serves
    them, and returns within about ``stop_timeout_s``.
    """
    from t2c_monitor.errors import ConfigError

    deployments = [d for c in recorded_configs(names) for d in monitor_deployments(c)]
    if not deployments:
        raise ConfigError("No recorded monitor has schedules: add `schedules: {audit_cron: '0 * * * *'}` (and "
                          "optionally `inbox:` with `ingest_interval:`) to the monitor file and apply it again.")
    asyncio.run(_serve(deployments, on_ready, stop_timeout_s))


async def _serve(deployments: list[Any], on_ready: Callable[[list[ServedDeployment]], None] | None,
                 stop_timeout_s: float) -> None:
    from prefect.runner import Runner

    runner = Runner(name=f"t2c-serve-{os.getpid()}", pause_on_shutdown=True)
    for deployment in deployments:
        await runner.add_deployment(deployment)
    if on_ready:
        on_ready([await _describe(d) for d in deployments])
    serving = asyncio.create_task(runner.start())
    await asyncio.sleep(0)  # Runner.start installs its own SIGTERM handler first; ours replace it
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if serving in done:  # the runner ended by itself: its error is the command's
        stopping.cancel()
        serving.result()
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(runner.astop(), stop_timeout_s / 2)
    try:
        await asyncio.wait_for(serving, stop_timeout_s / 2)
    except (TimeoutError, asyncio.CancelledError):
        serving.cancel()
    except Exception:  # noqa: BLE001 - the runner's teardown after a requested stop is not the user's concern
        pass


async def _describe(deployment: Any) -> ServedDeployment:
    """The deployment's schedule in words and its next run, computed as Prefect's scheduler computes it."""
    from prefect.server.schemas import schedules as server_schedules

    schedule = deployment.schedules[0].schedule
    if getattr(schedule, "cron", None):
        words = f"cron '{schedule.cron}' ({schedule.timezone or 'UTC'})"
        model = server_schedules.CronSchedule(cron=schedule.cron, timezone=schedule.timezone)
    else:
        words = f"every {format_duration(schedule.interval)}"
        model = server_schedules.IntervalSchedule(interval=schedule.interval, anchor_date=schedule.anchor_date,
                                                  timezone=schedule.timezone)
    dates = await model.get_dates(n=1, start=datetime.now(UTC))
    return ServedDeployment(name=f"{deployment.flow_name}/{deployment.name}", schedule=words,
                            next_run=dates[0] if dates else None)


def prefect_yaml(configs: list[MonitorConfig], *, work_pool: str = DEFAULT_WORK_POOL) -> dict[str, Any]:
    """A ``prefect.yaml`` declaring the monitors' deployments on ``work_pool``."""
    deployments = []
    for config in configs:
        for spec in deployment_specs(config):
            when = dict(spec["schedule"])
            deployments.append({
                "name": spec["name"], "entrypoint": spec["entrypoint"], "description": spec["description"],
                "tags": ["t2c", config.name], "parameters": spec["parameters"], "schedules": [when],
                "work_pool": {"name": work_pool, "work_queue_name": None, "job_variables": {}},
            })
    return {
        "name": "t2c-monitor",
        "prefect-version": _prefect_version(),
        "build": None,
        "push": None,
        # no pull step: the entrypoints are module paths of the installed package. An empty list, not null:
        # for null, `prefect deploy` writes one that changes to the deploying machine's working directory
        "pull": [],
        "deployments": deployments,
    }


def _prefect_version() -> str:
    import prefect

    return prefect.__version__
