"""What every command shares: the console, JSON output, and turning our errors into messages."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
    """Show a ``T2CError`` as its message and exit with status 2 instead of a traceback."""
    from t2c_monitor.errors import T2CError

    try:
        yield
    except T2CError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code=2) from None


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
