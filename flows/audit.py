"""The ``baseline`` and ``audit`` flows: thin compositions of ``t2c_monitor.audit`` and ``t2c_monitor.alerts``.

    audit: send again the monitor's failed alerts -> audit the window (stored in one transaction;
           a failure is stored as a failed audit; a window with nothing new ends the run here,
           completed, saying why, after alerting a monitor that stored nothing for longer than its
           ``alerts.no_data_after``) -> write its report -> alert the monitor's channels (quiet
           period, retries; failures recorded, never raised)

The audit is stored before any alert is attempted, so a channel that is down never loses it, and
the report is its own task, so retrying a failed report write never stores the audit twice. A
report that still cannot be written (a full or read-only disk) is recorded on the audit, the
alerts go out without it, and the report job (``flows.report``) writes it later.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from flows.common import database, retry_on_io_error
from t2c_monitor.audit import AuditRun
from t2c_monitor.wording import change_word


class BaselineParams(BaseModel):
    monitor: str
    batches: list[str] | None = Field(None, description="reference batch ids; default every stored batch")
    last: int | None = Field(None, ge=1, description="or the last K stored batches")
    reservoir: int | None = Field(None, ge=20, description="scores kept per concept; default the monitor's")
    seed: int = 0


class AuditParams(BaseModel):
    monitor: str
    last: int | None = Field(None, ge=1, description="the last K batches; default the monitor's audit window")
    batches: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    alerts: bool = Field(True, description="alert the monitor's channels when concepts are flagged")
    skip_unchanged: bool = Field(False, description="end without an audit when the monitor's window holds the very "
                                 "batches the last audit tested (what the scheduled deployments pass)")


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_on_io_error)
def build(params: BaselineParams) -> dict[str, Any]:
    from t2c_monitor.audit import build_baseline

    return build_baseline(database(), params.monitor, batches=params.batches, last=params.last,
                          reservoir_size=params.reservoir, seed=params.seed).to_dict()


@flow(name="baseline", log_prints=True)
def baseline_flow(params: BaselineParams) -> dict[str, Any]:
    summary = build(params)
    get_run_logger().info(f"baseline {summary['id']} of {params.monitor}: {summary['n_images']} images from "
                          f"{len(summary['batches'])} batches")
    return summary


@task
def resend_failed(monitor: str) -> list[Any]:
    from t2c_monitor.alerts import resend_failed_alerts

    return resend_failed_alerts(database(), monitor, log=get_run_logger().info)


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_on_io_error)
def audit_window(params: AuditParams) -> Any:
    """Compare and store, in one transaction: a retry after an I/O error stores the audit once. A window
    with nothing new returns NothingToAudit's message (a completed task, not a failed one)."""
    from t2c_monitor.audit import audit_window as run
    from t2c_monitor.errors import NothingToAudit

    try:
        return run(database(), params.monitor, last=params.last, batches=params.batches, since=params.since,
                   until=params.until, skip_unchanged=params.skip_unchanged)
    except NothingToAudit as nothing:
        return str(nothing)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io_error)
def report(outcome: Any) -> Any:
    """Write the stored audit's report; retried alone, so a disk error never stores a second audit."""
    from t2c_monitor.audit import write_report
    from t2c_monitor.settings import get_settings

    return write_report(database(), outcome, get_settings().reports_dir)


@task
def alert(summary: Any) -> list[Any]:
    from t2c_monitor.alerts import alert_audit

    return alert_audit(database(), summary, log=get_run_logger().info)


@task
def no_data(monitor: str) -> list[Any]:
    """Alert the monitor's channels when it has stored no batch for longer than its ``alerts.no_data_after``."""
    from t2c_monitor.alerts import alert_no_data

    return alert_no_data(database(), monitor, log=get_run_logger().info)


@flow(name="audit", log_prints=True)
def audit_flow(params: AuditParams) -> dict[str, Any]:
    logger = get_run_logger()
    resent = resend_failed(params.monitor) if params.alerts else []
    outcome = audit_window(params)
    if isinstance(outcome, str):  # nothing new in the window: no audit, and not a failure
        logger.info(outcome)
        silent = no_data(params.monitor) if params.alerts else []  # a feed that stopped is said, not only logged
        return AuditRun(summary=None, alerts=silent, resent=resent, skipped=outcome).to_dict()
    written = report(outcome, return_state=True)
    if written.is_completed():
        summary = written.result()
    else:  # the audit is stored: keep why its report is missing, alert without it
        from t2c_monitor.audit import record_report_failure

        error = written.result(raise_on_failure=False)
        summary = record_report_failure(database(), outcome.summary,
                                        error if isinstance(error, BaseException) else str(written.message))
        logger.warning(f"the report of audit {summary.id} could not be written ({summary.report_error}); "
                       "the report job writes it later")
    flagged = ", ".join(f"{f.name} ({change_word(f.direction)})" for f in summary.flagged)
    logger.info(f"audit {summary.id} of {params.monitor} ({summary.window_text()}): "
                + (f"flagged {flagged}" if flagged else "no concept shifted") + f"; report {summary.report}")
    return AuditRun(summary=summary, alerts=alert(summary) if params.alerts else [], resent=resent).to_dict()
