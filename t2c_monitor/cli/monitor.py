"""``t2c monitor``: declare monitors in YAML, record them, list them."""

from __future__ import annotations

from pathlib import Path

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, user_errors

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
    from t2c_monitor.monitors import load_models, load_monitor_file

    with user_errors():
        configs = load_monitor_file(path)
        loaded = []
        for config in configs:
            with console.status(f"loading the models of {config.name}"):
                loaded.append(load_models(config))
        results = []
        if not check:
            from t2c_monitor.store import open_database
            from t2c_monitor.store.monitors import get_monitor, record_monitor

            db = open_database()
            for models in loaded:
                with db.session() as session:
                    record_monitor(session, models)
                with db.session() as session:
                    record = get_monitor(session, models.config.name)
                results.append({"name": record.name, "bank": record.bank_name, "bank_version": record.bank_version,
                                "concepts": len(record.concept_names), "dim": int(record.concept_vectors.shape[1])})
        else:
            results = [{"name": m.config.name, "concepts": m.bank.k, "dim": m.bank.dim} for m in loaded]
    if as_json:
        emit_json({"checked_only": check, "monitors": results})
        return
    for r in results:
        verb = "valid" if check else "recorded"
        console.print(f"[green]{verb}[/] {r['name']}: {r['concepts']} concepts in {r['dim']}-d CLIP space"
                      + (f" (bank {r['bank']} v{r['bank_version']})" if not check else ""))


@monitor_app.command("list")
def list_(as_json: bool = JsonOption) -> None:
    """The recorded monitors."""
    from rich.table import Table

    from t2c_monitor.store import open_database
    from t2c_monitor.store.monitors import list_monitors

    with user_errors(), open_database().session() as session:
        rows = list_monitors(session)
    if as_json:
        emit_json({"monitors": rows})
        return
    if not rows:
        console.print("no monitors yet: declare them in a YAML file and run `t2c monitor apply FILE`")
        return
    table = Table("monitor", "encoder", "CLIP model", "bank", "updated")
    for r in rows:
        bank = f"{r['bank']} v{r['bank_version']}"
        table.add_row(r["name"], r["encoder"], r["clip"], bank, str(r["updated_at"])[:19])
    console.print(table)
