"""``t2c demo``: a week of a monitored model in the shapes world, end to end."""

from __future__ import annotations

import typer
from rich.text import Text

from t2c_monitor.cli.common import JsonOption, console, emit_json, shown, styled, use_prefect, user_errors


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    quick: bool = typer.Option(False, "--quick", help="the small world and fewer images (about a minute or two)"),
    as_json: bool = JsonOption,
) -> None:
    """Build the shapes world, fit the aligner, ingest a baseline and six days (a planted shift that
    lasts two days, then one the bank has no concept for), audit each day with alerts to a local
    webhook, and print the root causes and the shift in words."""
    import os

    from rich.table import Column, Table

    from t2c_monitor.settings import get_settings

    if "log_level" not in get_settings().model_fields_set and "PREFECT_LOGGING_LEVEL" not in os.environ:
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"  # the demo prints its own story
    from flows.demo import run_demo

    say = (lambda _: None) if as_json else (lambda m: console.print(m, highlight=False))
    with user_errors():
        endpoint = use_prefect()  # the demo's flow runs stay visible in this server's UI afterwards
        say(f"Prefect UI: {endpoint.ui_url}")
        result = run_demo(quick=quick, progress=not as_json,
                          log=say)
    if as_json:
        emit_json({**result.to_dict(), "prefect_ui": endpoint.ui_url})
        return
    folded = [Column(name, overflow="fold") for name in ("planted shift", "root causes", "in words", "alerts")]
    table = Table("day", "images", *folded, title="What the audits said")  # fold: specs have no space to wrap at
    for day in result.days:
        causes = ", ".join(day.roots)
        echoes = len(day.flagged) - len(day.roots)
        if day.roots and echoes > 0:
            causes += f" ({echoes} more flagged, moving with {'it' if len(day.roots) == 1 else 'them'})"
        if day.unlisted:
            unnamed = styled("[yellow]a shift no concept names[/]: {}", ", ".join(day.unlisted))
            causes = Text.assemble(causes, "; ", unnamed) if causes else unnamed
        table.add_row(shown(day.batch), str(day.images), day.shift or "", causes or Text("none", style="green"),
                      day.words, ", ".join(day.alerts))
    console.print(table)
    for body in result.received:
        console.print(styled("[bold]webhook received[/] (audit {}):", body["audit_id"]))
        console.print(body["text"])
    reports = [d.report for d in result.days if d.flagged]
    if reports:
        console.print(f"open the report of the flagged day: {reports[0]}")
    console.print(f"monitor file: {result.monitor_file}\ndatabase: {result.database_url}\n"
                  f"Prefect UI (the week's ingest and audit runs): {endpoint.ui_url}\n"
                  f"next: `t2c audit history --monitor shapes --concept grass`, `t2c alerts list --monitor shapes`, "
                  f"`t2c serve` to run the schedules: files dropped into {result.inbox} are ingested every "
                  f"{result.ingest_interval} and audited {result.audit_schedule}")
