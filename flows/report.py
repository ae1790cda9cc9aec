"""The ``decode_report`` flow: the periodic report job of a monitor (``schedules.report_cron``).

    words for audits that found a shift but have none -> reports that are missing or failed ->
    a digest of the period (audits, roots, alerts, ingest health), sent to the channels that take it
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from flows.common import database, retry_on_io_error


class ReportParams(BaseModel):
    monitor: str
    period_hours: float = Field(24.0, gt=0, description="the digest covers this many hours before now")
    since: datetime | None = Field(None, description="or from this time")
    send: bool = Field(True, description="send the digest to the channels that take it (alerts.digest)")


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_on_io_error)
def report_job(params: ReportParams) -> dict[str, Any]:
    from t2c_monitor.reports.job import run_report_job
    from t2c_monitor.settings import get_settings

    return run_report_job(database(), params.monitor, get_settings().reports_dir, since=params.since,
                          period=timedelta(hours=params.period_hours), send=params.send,
                          log=get_run_logger().info).to_dict()


@flow(name="decode_report", log_prints=True)
def decode_report_flow(params: ReportParams) -> dict[str, Any]:
    result = report_job(params)
    get_run_logger().info(f"report job of {params.monitor}: {len(result['refreshed'])} audits refreshed, "
                          f"{len(result['failures'])} not; digest {result['html']}")
    return result
