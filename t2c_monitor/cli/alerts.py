"""``t2c alerts``: what was sent to whom, and sending the failed ones again."""

from __future__ import annotations

import typer

from t2c_monitor.cli.common import MAX_ROWS, JsonOption, console, emit_json, open_monitor, styled, user_errors

alerts_app = typer.Typer(help="Alerts: notifications of flagged concepts on the monitors' channels.",
                         no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def list_(
    monitor: str = typer.Option(..., "--monitor", "-m"),
    limit: int = typer.Option(50, "--limit", min=1, max=MAX_ROWS),
    as_json: bool = JsonOption,
) -> None:
    """The monitor's alerts, newest first: channel, status, attempts, last error."""
    from rich.table import Table

    from t2c_monitor.store.alerts import list_alerts

    with user_errors():
        db, record = open_monitor(monitor)
        with db.engine.connect() as conn:
            rows = list_alerts(conn, record.id, limit=limit)
    if as_json:
        emit_json({"monitor": monitor, "alerts": [r.to_dict() for r in rows]})
        return
    table = Table("alert", "about", "channel", "status", "attempts", "flagged", "created", "error")
    for r in rows:
        about = f"audit {r.audit_id}" if r.audit_id is not None else r.kind.replace("_", " ")
        table.add_row(str(r.id), about, r.channel, r.status, str(r.attempts), str(r.n_flagged),
                      f"{r.created_at:%Y-%m-%d %H:%M:%S}", r.last_error or "")
    console.print(table)


@alerts_app.command()
def retry(
    monitor: str = typer.Option(None, "--monitor", "-m", help="default: every monitor"),
    as_json: bool = JsonOption,
) -> None:
    """Send the failed alerts again (the audit flow also does this before each audit). Exits 1 when any of them
    failed again, so a script or a cron job sees it."""
    from t2c_monitor.alerts import resend_failed_alerts
    from t2c_monitor.store import open_database

    with user_errors():
        outcomes = [o.to_dict() for o in resend_failed_alerts(open_database(), monitor)]
    still_failed = sum(o["status"] == "failed" for o in outcomes)
    if as_json:
        emit_json({"alerts": outcomes})
    else:
        if not outcomes:
            console.print("no failed alerts")
        for o in outcomes:
            console.print(f"alert {o['alert_id']} to {o['channel']}: {o['status']}"
                          + (f" ({o['error']})" if o["error"] else ""))
        if still_failed:
            console.print(styled("[red]{} of {} alerts failed again[/]", still_failed, len(outcomes)))
    if still_failed:
        raise typer.Exit(code=1)
