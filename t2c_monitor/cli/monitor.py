"""``t2c monitor``: declare monitors in YAML, record them, list them."""

from __future__ import annotations

from pathlib import Path

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, shown, styled, user_errors

monitor_app = typer.Typer(help="Monitors: what is watched (encoder, aligner, concept bank, schedules).",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")


@monitor_app.command()
def apply(
    path: Path = typer.Argument(..., help="monitors YAML file"),
    check: bool = typer.Option(False, "--check", help="validate the file and load the models; record nothing"),
    as_json: bool = JsonOption,
) -> None:
    """Validate a monitors file, load and cross-check its models, and record the monitors."""
    from t2c_monitor.apply import apply_monitor_file
    from t2c_monitor.store import open_database

    with user_errors():
        applied = apply_monitor_file(path, None if check else open_database(), status=console.status)
        results = [a.to_dict() for a in applied]
    if as_json:
        emit_json({"checked_only": check, "monitors": results})
        return
    for r in results:
        verb = "valid" if check else "recorded"
        bank = f" (bank {shown(r['bank'])} v{r['bank_version']})" if not check else ""
        console.print(styled("[green]{}[/] {}: {} concepts in {}-d CLIP space{}", verb, r["name"], r["concepts"],
                             r["dim"], bank))


@monitor_app.command("list")
def list_(as_json: bool = JsonOption) -> None:
    """The recorded monitors."""
    from dataclasses import asdict

    from rich.table import Table

    from t2c_monitor.store import open_database
    from t2c_monitor.store.monitors import list_monitors

    with user_errors(), open_database().session() as session:
        rows = list_monitors(session)
    if as_json:
        emit_json({"monitors": [asdict(r) for r in rows]})
        return
    if not rows:
        console.print("no monitors yet: declare them in a YAML file and run `t2c monitor apply FILE`")
        return
    table = Table("monitor", "encoder", "CLIP model", "bank", "updated")
    for r in rows:
        table.add_row(r.name, r.encoder, r.clip, f"{r.bank} v{r.bank_version}", f"{r.updated_at:%Y-%m-%d %H:%M:%S}")
    console.print(table)
