"""``t2c batches``: a monitor's batches and how far each got (stored, failed with why, unfinished)."""

from __future__ import annotations

import typer
from rich.text import Text

from t2c_monitor.cli.common import MAX_ROWS, JsonOption, console, emit_json, open_monitor, shown, user_errors

batches_app = typer.Typer(help="Batches: what was ingested, and what failed or is unfinished.", no_args_is_help=True)

WHAT_A_RERUN_DOES = {
    "stored": "",
    "failed": "a rerun completes it, storing only what is missing",
    "embedding": "unfinished (a run stopped, or is running): a rerun stores only what is missing",
    "pending": "not started: a rerun ingests it",
}


def rerun_note(row, monitor: str) -> str:
    """What a rerun of a batch that is not stored does, and the command that does it."""
    import shlex

    if row.status == "stored":
        return ""
    done = f"{row.n_stored} images stored so far; " if row.status != "pending" else ""
    return (f"{done}{WHAT_A_RERUN_DOES[row.status]}: t2c ingest {shlex.quote(row.source_uri)} --monitor "
            f"{shlex.quote(monitor)} --batch-id {shlex.quote(row.external_id)}")


def register(app: typer.Typer) -> None:
    app.add_typer(batches_app, name="batches")


@batches_app.command("list")
def list_(
    monitor: str = typer.Option(..., "--monitor", "-m"),
    status: str = typer.Option(None, "--status", help="only batches in this state: pending, embedding, stored, failed"),
    limit: int = typer.Option(20, "--limit", min=1, max=MAX_ROWS),
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
        emit_json({"monitor": monitor, "batches": [asdict(r) | {"rerun": rerun_note(r, monitor) or None}
                                                    for r in rows]})
        return
    if not rows:
        console.print(f"no batches of {monitor}" + (f" in state {status}" if status else ""))
        return
    table = Table("batch", "received", "status", "ok", "failed", Column("note", overflow="fold"))
    for r in rows:
        colour = {"stored": "green", "failed": "red"}.get(r.status, "yellow")
        note = "; ".join(x for x in (r.error, rerun_note(r, monitor)) if x)
        table.add_row(shown(r.external_id), f"{r.received_at:%Y-%m-%d %H:%M:%S}", Text(r.status, style=colour),
                      str(r.n_ok), str(r.n_failed), shown(note))
    console.print(table)
