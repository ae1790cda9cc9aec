"""``t2c report``: an audit's report written again, the digest of a period (the report job), a
dataset's concept report; ``t2c ui``: evidently's UI over every audit's history."""

from __future__ import annotations

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, shown, time_window, user_errors

report_app = typer.Typer(help="Reports: an audit's (--audit), the digest of a period, a dataset's.",
                         invoke_without_command=True)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")
    app.command()(ui)


@report_app.callback(invoke_without_command=True)
def report(
    ctx: typer.Context,
    monitor: str = typer.Option(None, "--monitor", "-m"),
    audit: int = typer.Option(None, "--audit", help="write this audit's report again (words decoded if missing)"),
    as_json: bool = JsonOption,
) -> None:
    """Write an audit's report (HTML and its Markdown digest) again, with the words it lacked and links
    to the audits since."""
    if ctx.invoked_subcommand is not None:
        return
    if monitor is None or audit is None:
        raise typer.BadParameter("give --monitor and --audit (or a subcommand: digest, dataset)",
                                 param_hint="--monitor/--audit")
    from pathlib import Path

    from t2c_monitor.audit import refresh_report
    from t2c_monitor.settings import get_settings
    from t2c_monitor.store import open_database

    with user_errors():
        summary = refresh_report(open_database(), monitor, audit, get_settings().reports_dir)
    paths = {"html": summary.report, "markdown": str(Path(summary.report).with_name("digest.md"))}
    if as_json:
        emit_json({"monitor": monitor, "audit": audit, **paths})
        return
    console.print(f"report of audit {audit} of {monitor}: {paths['html']}\ndigest: {paths['markdown']}")


@report_app.command()
def dataset(
    monitor: str = typer.Option(..., "--monitor", "-m"),
    batches: str = typer.Option(None, "--batches", help="comma-separated batch ids"),
    window: str = typer.Option(None, "--window", help="or the batches received in this span before now, e.g. 7d"),
    since: str = typer.Option(None, "--since", help="or from this ISO time"),
    until: str = typer.Option(None, "--until"),
    as_json: bool = JsonOption,
) -> None:
    """What a set of stored images contains, in the monitor's concepts, against its baseline."""
    from t2c_monitor.reports.dataset import dataset_report, write_dataset_report
    from t2c_monitor.settings import get_settings
    from t2c_monitor.store import open_database

    start, end = time_window(window, since, until)
    chosen = [b.strip() for b in batches.split(",") if b.strip()] if batches else None
    with user_errors(), console.status("reading the images' concept scores"):
        report = dataset_report(open_database(), monitor, batches=chosen, since=start, until=end)
        files = write_dataset_report(get_settings().reports_dir, report)
    if as_json:
        emit_json({"monitor": monitor, "batches": report.batches, "n_images": report.n_images, **files.to_dict()})
        return
    most = ", ".join(f"{p.name} ({p.share:.0%})" for p in report.most[:5])
    console.print(f"{report.n_images} images of {monitor} ({shown(', '.join(report.batches))}); most present: {most}")
    if report.words is not None and report.words.text():
        console.print(f"against the baseline, in words: {report.words.text()}")
    console.print(f"report: {files.html}")


@report_app.command()
def digest(
    monitor: str = typer.Option(..., "--monitor", "-m"),
    window: str = typer.Option("24h", "--window", help="the period before now, e.g. 24h or 7d"),
    since: str = typer.Option(None, "--since", help="or from this ISO time"),
    until: str = typer.Option(None, "--until", help="to this ISO time (default now)"),
    refresh: bool = typer.Option(True, "--refresh/--no-refresh", help="first decode and report the audits that "
                                 "lack words or a report (what the scheduled report job does)"),
    send: bool = typer.Option(False, "--send/--no-send", help="send it to the channels that take digests"),
    as_json: bool = JsonOption,
) -> None:
    """The digest of a period: audits with their roots and words, alerts, ingest health."""
    from datetime import UTC, datetime

    from t2c_monitor.reports.job import run_report_job
    from t2c_monitor.settings import get_settings
    from t2c_monitor.store import open_database

    start, end = time_window(None if since else window, since, until)
    with user_errors():
        result = run_report_job(open_database(), monitor, get_settings().reports_dir, since=start,
                                until=end or datetime.now(UTC), send=send, refresh=refresh,
                                log=(lambda _: None) if as_json else console.print)
    if as_json:
        emit_json(result.to_dict())
        return
    console.print(result.files.text if result.files else "")
    console.print(f"digest: {result.to_dict()['html']}")
    for line in result.sent:
        console.print(f"sent: {line}")


def ui(
    start: bool = typer.Option(False, "--start", help="start evidently's UI (else print how to)"),
    port: int = typer.Option(8000, "--port"),
) -> None:
    """evidently's UI over every audit's evidently run (one project per monitor, one run per audit)."""
    import os
    import shutil
    import sys
    from pathlib import Path

    from t2c_monitor.reports.evidently_run import workspace_dir

    workspace = workspace_dir()
    evidently = shutil.which("evidently") or str(Path(sys.executable).parent / "evidently")
    command = [evidently, "ui", "--workspace", str(workspace), "--port", str(port)]
    if not start:
        console.print(f"evidently workspace: {workspace}\nbrowse it with: {' '.join(command)}")
        return
    if not workspace.is_dir():
        raise typer.BadParameter(f"{workspace} holds no evidently runs yet: run an audit first", param_hint="--start")
    os.execv(command[0], command)  # the UI takes over this process (Ctrl-C stops it)
