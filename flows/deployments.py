"""Deployments from monitor configs: the scheduled audit and the inbox ingest of each monitor.

``monitor_deployments`` turns a monitor's ``schedules`` section into Prefect deployments;
``serve_monitors`` (``t2c serve``) serves every recorded monitor's deployments in one process,
the embedded default; ``prefect_yaml`` writes the same deployments as a ``prefect.yaml`` for
work pools (``prefect deploy --all``).
"""

from __future__ import annotations

from typing import Any

from t2c_monitor.monitors import MonitorConfig

AUDIT_ENTRYPOINT = "flows/audit.py:audit_flow"
INBOX_ENTRYPOINT = "flows/ingest.py:ingest_inbox_flow"
DEFAULT_WORK_POOL = "t2c-pool"


def deployment_specs(config: MonitorConfig) -> list[dict[str, Any]]:
    """What each of the monitor's deployments is: flow entrypoint, name, schedule, parameters."""
    schedules = config.schedules
    specs = []
    if schedules.audit_cron:
        specs.append({
            "entrypoint": AUDIT_ENTRYPOINT, "name": f"audit-{config.name}",
            "description": f"Drift audit of monitor {config.name} against its baseline; alerts its channels.",
            "schedule": {"cron": schedules.audit_cron, "timezone": schedules.timezone},
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
    """The monitor's ``RunnerDeployment`` objects (to ``serve`` or ``.apply()``)."""
    from prefect.schedules import Cron, Interval

    from flows.audit import audit_flow
    from flows.ingest import ingest_inbox_flow

    flows = {AUDIT_ENTRYPOINT: audit_flow, INBOX_ENTRYPOINT: ingest_inbox_flow}
    out = []
    for spec in deployment_specs(config):
        when = spec["schedule"]
        schedule = (Cron(when["cron"], timezone=when["timezone"]) if "cron" in when
                    else Interval(when["interval"], timezone=when["timezone"]))
        out.append(flows[spec["entrypoint"]].to_deployment(
            name=spec["name"], schedules=[schedule], parameters=spec["parameters"], description=spec["description"],
            tags=["t2c", config.name]))
    return out


def recorded_configs(names: list[str] | None = None) -> list[MonitorConfig]:
    """The configs of the recorded monitors (all, or the named ones)."""
    from t2c_monitor.errors import ConfigError
    from t2c_monitor.store import open_database
    from t2c_monitor.store.monitors import get_monitor, list_monitors

    db = open_database()
    with db.session() as session:
        wanted = names or [m["name"] for m in list_monitors(session)]
        if not wanted:
            raise ConfigError("No monitors are recorded: declare them in a YAML file and run `t2c monitor apply FILE`.")
        return [MonitorConfig.model_validate(get_monitor(session, n).config) for n in wanted]


def serve_monitors(names: list[str] | None = None) -> None:
    """Serve the scheduled deployments of the recorded monitors until interrupted."""
    from prefect import serve

    from t2c_monitor.errors import ConfigError

    deployments = [d for c in recorded_configs(names) for d in monitor_deployments(c)]
    if not deployments:
        raise ConfigError("No recorded monitor has schedules: add `schedules: {audit_cron: '0 * * * *'}` (and "
                          "optionally `inbox:` with `ingest_interval:`) to the monitor file and apply it again.")
    serve(*deployments)


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
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $T2C_PROJECT_DIR }}"}}],
        "deployments": deployments,
    }


def _prefect_version() -> str:
    import prefect

    return prefect.__version__
