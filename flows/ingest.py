"""The ``ingest`` flow: embed, align, score and store one batch of images for a monitor.

    list the source (retried on I/O) -> plan the batch (exactly once) -> embed and store the
    items, in one task or in shards on a Dask cluster -> recount the batch and mark it done.

With ``workers`` > 1 the items are split into that many shards, run by ``DaskTaskRunner`` on a
LocalCluster (or the scheduler at ``dask_address``); each shard loads the monitor's models in its
worker process and writes its own rows, so the result equals a one-worker run.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, Field

from flows.common import database, retry_on_io_error


class IngestParams(BaseModel):
    source: str = Field(description="folder, glob, fsspec URI/prefix, or manifest (.jsonl/.csv)")
    monitor: str
    batch_id: str | None = Field(None, description="given batch id; default derived from the content")
    workers: int | None = Field(None, ge=1, description="Dask shards; default the monitor's ingest.workers")
    dask_address: str | None = None


@task(retries=3, retry_delay_seconds=5, retry_condition_fn=retry_on_io_error)
def list_source(source: str) -> list:
    from t2c_monitor.ingest_checks import check_source
    from t2c_monitor.sources import resolve_source

    return resolve_source(check_source(source))


@task
def plan(monitor: str, items: list, source: str, batch_id: str | None) -> dict[str, Any]:
    from t2c_monitor.ingest import plan_batch
    from t2c_monitor.store.monitors import get_monitor

    db = database(migrate=True)  # the first task of an ingest run brings the schema to head
    with db.session() as session:
        record = get_monitor(session, monitor)
    batch = plan_batch(db, record, items, source_uri=source, batch_id=batch_id)
    return {"batch_id": batch.batch_id, "external_id": batch.external_id, "items": batch.items,
            "workers": record.config.ingest.workers, "dask_address": record.config.ingest.dask_address}


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_on_io_error)
def ingest_shard(monitor: str, batch_id: int, items: list) -> dict[str, float]:
    """Embed and store one shard; safe to retry, since stored images are skipped."""
    from t2c_monitor.ingest import IngestOptions, ingest_items, load_runtime

    db = database()
    runtime = load_runtime(db, monitor)
    logger = get_run_logger()
    options = IngestOptions.for_monitor(runtime.record)
    return ingest_items(db, runtime, batch_id, items, options, log=logger.info)


@task
def fail(batch_id: int, error: BaseException) -> None:
    """Mark the batch ``failed`` with the error (a rerun still completes it); best effort when the
    database itself is what failed, since Prefect's run state keeps the error too."""
    from t2c_monitor.errors import DatabaseUnavailableError
    from t2c_monitor.ingest import try_fail_batch

    try:
        marked = try_fail_batch(database(), batch_id, error)
    except DatabaseUnavailableError:
        marked = False
    if not marked:
        get_run_logger().warning(f"could not mark batch {batch_id} failed: the database did not answer")


def embed_and_store(monitor: str, batch: dict[str, Any], workers: int, dask_address: str | None) -> dict[str, float]:
    """Embed and store the planned batch's items (sharded on Dask when ``workers`` > 1); a run that
    fails leaves its batch ``failed`` with the error, never ``embedding``."""
    try:
        if workers > 1 and len(batch["items"]) > 1:
            return run_sharded(monitor, batch["batch_id"], batch["items"], workers, dask_address)
        return ingest_shard(monitor, batch["batch_id"], batch["items"])
    except Exception as exc:
        fail(batch["batch_id"], exc)
        raise


@task
def finish(batch_id: int, timings: dict[str, float]) -> dict[str, Any]:
    from t2c_monitor.ingest import finish_batch

    return finish_batch(database(), batch_id, timings).to_dict()


def shards(items: list, n: int) -> list[list]:
    """``n`` shards of about equal size, each a contiguous run of the items (keeps files close together)."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        stop = start + size + (1 if i < extra else 0)
        out.append(items[start:stop])
        start = stop
    return out


@flow(name="ingest", log_prints=True)
def ingest_flow(params: IngestParams) -> dict[str, Any]:
    started = time.perf_counter()
    items = list_source(params.source)
    batch = plan(params.monitor, items, params.source, params.batch_id)
    timings = embed_and_store(params.monitor, batch, params.workers or batch["workers"],
                              params.dask_address or batch["dask_address"])
    timings["total"] = time.perf_counter() - started
    summary = finish(batch["batch_id"], timings)
    get_run_logger().info(
        f"batch {summary['external_id'][:16]}: {summary['status']}, {summary['n_ok']} ok, {summary['n_failed']} failed"
    )
    return summary


class InboxParams(BaseModel):
    source: str = Field(description="the inbox: folder, glob, fsspec prefix or manifest that keeps receiving files")
    monitor: str
    interval_s: float = Field(600, gt=0, description="the schedule's interval; one batch per interval")


@task
def select_new(monitor: str, items: list, interval_s: float) -> dict[str, Any]:
    """This interval's batch id and the inbox files the monitor does not hold; first, the batches of earlier
    intervals that a killed or failed run left are closed (their files not stored become new again)."""
    from datetime import timedelta

    from t2c_monitor.ingest import close_interrupted_inbox_batches, inbox_batch_id, new_items
    from t2c_monitor.store.monitors import get_monitor

    db = database()
    with db.session() as session:
        record = get_monitor(session, monitor)
    batch_id = inbox_batch_id(timedelta(seconds=interval_s))
    for closed in close_interrupted_inbox_batches(db, record, current=batch_id):
        get_run_logger().warning(f"closed inbox batch {closed.external_id}, left unfinished by an interrupted run: "
                                 f"{closed.n_ok} images kept, its other files go in {batch_id}")
    return {"batch_id": batch_id, "items": new_items(db, record, items, batch_id=batch_id)}


@flow(name="ingest-inbox", log_prints=True)
def ingest_inbox_flow(params: InboxParams) -> dict[str, Any]:
    """Ingest the files of an inbox that the monitor does not hold yet, as this interval's batch. One run of a
    monitor's inbox at a time (a database lock): a run that finds the inbox held leaves its files to the next."""
    from t2c_monitor.ingest import exclusive_inbox
    from t2c_monitor.sources import expand_source
    from t2c_monitor.store.monitors import get_monitor

    logger = get_run_logger()
    db = database()
    with db.session() as session:
        record = get_monitor(session, params.monitor)
    with exclusive_inbox(db, record) as held:
        if not held:
            logger.info(f"inbox of {params.monitor}: an earlier run is still ingesting; new files wait for the next")
            return {"status": "busy"}
        source = expand_source(params.source)
        items = list_source(source)
        selected = select_new(params.monitor, items, params.interval_s)
        if not selected["items"]:
            logger.info(f"inbox {source}: no new files")
            return {"status": "nothing new", "n_source": len(items)}
        started = time.perf_counter()
        batch = plan(params.monitor, selected["items"], source, selected["batch_id"])
        timings = embed_and_store(params.monitor, batch, 1, None)
        timings["total"] = time.perf_counter() - started
        summary = finish(batch["batch_id"], timings)
    logger.info(f"inbox batch {summary['external_id']}: {summary['n_ok']} ok, {summary['n_failed']} failed")
    return summary


def run_sharded(monitor: str, batch_id: int, items: list, workers: int, address: str | None) -> dict[str, float]:
    """Run the shards in a subflow on Dask; stage timings are summed over shards."""
    from prefect_dask import DaskTaskRunner

    runner = DaskTaskRunner(address=address) if address else DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None},
    )

    @flow(name="ingest-shards", task_runner=runner)
    def ingest_shards() -> list[dict[str, float]]:
        futures = [ingest_shard.submit(monitor, batch_id, shard) for shard in shards(items, workers)]
        return [f.result() for f in futures]

    totals: dict[str, float] = {}
    for timing in ingest_shards():
        for stage, seconds in timing.items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    return totals
