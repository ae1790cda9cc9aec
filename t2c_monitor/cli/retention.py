"""``t2c retention apply``: drop the vectors of old images (their scores, batches and audits stay)."""

from __future__ import annotations

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, user_errors

retention_app = typer.Typer(help="Retention: bound the database by dropping old image vectors.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(retention_app, name="retention")


@retention_app.command("apply")
def apply(
    monitor: list[str] = typer.Option(None, "--monitor", "-m", help="a monitor (repeatable; default: all)"),
    older_than: str = typer.Option(None, "--older-than", help="drop vectors of images stored longer ago than this "
                                   "(e.g. 90d); default: each monitor's retention.vectors"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be dropped, drop nothing"),
    vacuum: bool = typer.Option(True, "--vacuum/--no-vacuum", help="VACUUM the image table afterwards so "
                                "PostgreSQL reuses the space"),
    as_json: bool = JsonOption,
) -> None:
    """Drop the aligned vectors of images older than the monitor's retention.vectors (or --older-than).

    Kept: every image row with its concept scores, batches, baselines (and the vectors of the active
    baseline's batches), audits and reports. Audits of old windows still test every concept; searches and
    root causes need vectors, so they skip the images whose vector was dropped."""
    from t2c_monitor.durations import parse_duration
    from t2c_monitor.retention import apply_retention
    from t2c_monitor.store import open_database

    keep = None
    if older_than is not None:
        try:
            keep = parse_duration(older_than)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--older-than") from None
    with user_errors():
        outcomes = apply_retention(open_database(), monitor or None, older_than=keep, dry_run=dry_run,
                                   vacuum=vacuum, progress=not as_json,
                                   log=(lambda _: None) if as_json else (lambda m: console.print(m, highlight=False)))
    if as_json:
        emit_json({"monitors": [o.to_dict() for o in outcomes]})
