"""What every command shares: the console, JSON output, and turning our errors into messages."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)

JsonOption = typer.Option(False, "--json", help="Print the result as one JSON object on stdout.")
TemplateOption = typer.Option(
    None,
    "--template",
    help="A template set (paper, imagenet80, plain) or a format string with '{}'; repeatable, sets and strings "
    "mix (--template paper --template '{} at dusk'). Default: the paper's 7.",
)


def emit_json(payload: Any) -> None:
    """Write one JSON object to stdout (progress and messages go to stderr)."""
    sys.stdout.write(json.dumps(payload, default=str, sort_keys=True) + "\n")
    sys.stdout.flush()


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a ``T2CError`` as its message and exit with status 2, and a disk or network error (``OSError``:
    a full or read-only disk, a file that went away) as its message with status 1, instead of a traceback."""
    from t2c_monitor.errors import T2CError

    try:
        yield
    except T2CError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code=2) from None
    except OSError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code=1) from None


def open_monitor(name: str) -> tuple[Any, Any]:
    """The database of the settings and the recorded monitor ``name`` (``ConfigError`` if unknown)."""
    from t2c_monitor.store import open_database
    from t2c_monitor.store.monitors import get_monitor

    db = open_database()
    with db.session() as session:
        return db, get_monitor(session, name)


def use_prefect() -> Any:
    """Point this command's flows at a Prefect server whose services run (see ``t2c_monitor.prefect_server``):
    the configured ``PREFECT_API_URL``, or this home's local server, started on first need."""
    from t2c_monitor.prefect_server import use_prefect_server

    return use_prefect_server()


def time_window(window: str | None, since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``--window 24h`` (before now) or ``--since``/``--until`` ISO times (UTC unless they say otherwise)."""
    from t2c_monitor.monitors import parse_duration

    def when(value: str | None, option: str) -> datetime | None:
        if value is None:
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not an ISO date or time such as 2026-11-22T10:00",
                                     param_hint=option) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    if window is not None:
        if since or until:
            raise typer.BadParameter("give --window or --since/--until, not both", param_hint="--window")
        try:
            return datetime.now(UTC) - parse_duration(window), None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--window") from None
    return when(since, "--since"), when(until, "--until")
