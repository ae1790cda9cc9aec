"""The ``retention`` flow: a monitor's ``retention.vectors`` applied on its ``retention.cron`` by ``t2c serve``
(or a work pool): the vectors of old images dropped, their scores, batches and audits kept."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel

from flows.common import database, retry_on_io_error


class RetentionParams(BaseModel):
    monitor: str


@task(retries=2, retry_delay_seconds=30, retry_condition_fn=retry_on_io_error)
def drop_old_vectors(params: RetentionParams) -> dict[str, Any]:
    from t2c_monitor.retention import apply_retention

    (outcome,) = apply_retention(database(), [params.monitor], log=get_run_logger().info)
    return outcome.to_dict()


@flow(name="retention", log_prints=True)
def retention_flow(params: RetentionParams) -> dict[str, Any]:
    return drop_old_vectors(params)
