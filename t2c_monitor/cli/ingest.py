"""``t2c ingest``: run the ingest flow for one batch, locally."""

from __future__ import annotations

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, styled, use_prefect, user_errors


def register(app: typer.Typer) -> None:
    app.command()(ingest)


def ingest(
    source: str = typer.Argument(..., help="folder, glob, fsspec URI or prefix, or a manifest (.jsonl/.csv)"),
    monitor: str = typer.Option(..., "--monitor", "-m", help="name of a recorded monitor"),
    batch_id: str = typer.Option(None, "--batch-id", help="batch id (default: derived from the content)"),
    workers: int = typer.Option(None, "--workers", min=1, help="Dask shards (default: the monitor's ingest.workers)"),
    dask_address: str = typer.Option(None, "--dask-address", help="an existing Dask scheduler"),
    flow: bool = typer.Option(True, "--flow/--no-flow", help="run as a Prefect flow (default) or in-process"),
    as_json: bool = JsonOption,
) -> None:
    """Embed, align, score and store one batch of images; a rerun of the same batch stores nothing twice."""
    if not flow and (workers is not None or dask_address is not None):  # sharding is the flow's: never dropped
        raise typer.BadParameter("--workers and --dask-address shard the batch over Dask, which the flow does: "
                                 "drop --no-flow", param_hint="--workers/--dask-address")
    with user_errors():
        from t2c_monitor.ingest_checks import check_batch_id, check_source

        check_batch_id(batch_id)  # refused here, before a flow run keeps them as its parameters
        check_source(source)
        if flow:
            use_prefect()
            from flows.ingest import IngestParams, ingest_flow

            summary = ingest_flow(IngestParams(source=source, monitor=monitor, batch_id=batch_id, workers=workers,
                                               dask_address=dask_address))
        else:
            from t2c_monitor.ingest import ingest as run
            from t2c_monitor.store import open_database

            summary = run(open_database(), monitor, source, batch_id=batch_id, progress=True).to_dict()
    if as_json:
        emit_json(summary)
        return
    colour = "green" if summary["status"] == "stored" else "red"
    console.print(styled(f"[{colour}]{{}}[/] batch {{}}: {{}} ok, {{}} failed of {{}}", summary["status"],
                         summary["external_id"][:16], summary["n_ok"], summary["n_failed"], summary["n_images"]))
    for category, n in summary["failures"].items():
        console.print(f"  {n:>6} {category}")
    if summary.get("error"):
        console.print(f"  {summary['error']}")
