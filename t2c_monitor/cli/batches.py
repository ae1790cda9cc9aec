"""``t2c batches``: a monitor's batches and how far each got (stored, failed with why, unfinished)."""

from __future__ import annotations

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, open_monitor, user_errors

batches_app = typer.Typer(help="Batches: what was ingested, and what failed or is unfinished.", no_args_is_help=True)

WHAT_A_RERUN_DOES = {
    "stored": "",
    "failed": "rerun `t2c ingest SOURCE --monitor M --batch-id ID` to complete it",
    "embedding": "unfinished (a run stopped or is running): a rerun stores only what is missing",
    "pending": "not started: a rerun ingests it",
}


def register(app: typer.Typer) -> None:
    app.add_typer(batches_app, name="batches")


@batches_app.command("list")
def list_(
    monitor: str = typer.Option(..., "--monitor", "-m"),
    status: str = typer.Option(None, "--status", help="only batches in this state: pending, embedding, stored, failed"),
    limit: int = typer.Option(20, "--limit", min=1),
    as_json: bool = JsonOption,
) -> None:
    """The monitor's latest batches, newest first, with their state and counts."""
    from dataclasses import asdict

    from rich.table import Column, Table

    from t2c_monitor.store.batches import list_batches

    if status is not None and status not in WHAT_A_RERUN_DOES:
        raise typer.BadParameter(f"{status!r} is not one of {', '.join(WHAT_A_RERUN_DOES)}", param_hint="--status")
    with user_errors():
        db, record = open_monitor(monitor)
        with db.engine.connect() as conn:
            rows = list_batches(conn, record.id, limit=limit, status=status)
    if as_json:
        emit_json({"monitor": monitor, "batches": [asdict(r) for r in rows]})
        return
    if not rows:
        console.print(f"no batches of {monitor}" + (f" in state {status}" if status else ""))
        return
    table = Table("batch", "received", "status", "ok", "failed", Column("note", overflow="fold"))
    for r in rows:
        colour = {"stored": "green", "failed": "red"}.get(r.status, "yellow")
        note = "; ".join(x for x in (r.error, WHAT_A_RERUN_DOES[r.status]) if x)
        table.add_row(r.external_id, f"{r.received_at:%Y-%m-%d %H:%M:%S}", f"[{colour}]{r.status}[/]", str(r.n_ok),
                      str(r.n_failed), note)
    console.print(table)
