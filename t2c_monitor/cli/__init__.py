"""The ``t2c`` command line.

Each capability lives in its own module under ``t2c_monitor.cli`` exposing ``register(app)``;
heavy libraries (torch, open_clip, prefect) are imported inside the commands so that ``t2c --help``
stays fast.
"""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES: tuple[str, ...] = (
    "db",
    "demo",
    "concepts",
    "zeroshot",
    "aligner",
    "monitor",
    "ingest",
    "batches",
    "world",
    "audit",
    "decode",
    "search",
    "cbm",
    "report",
    "alerts",
    "retention",
    "serve",
    "server",
)

app = typer.Typer(
    name="t2c",
    help="t2c-monitor: concept-level monitoring of vision models (text-to-concept).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

for _module in COMMAND_MODULES:
    importlib.import_module(f"t2c_monitor.cli.{_module}").register(app)


def main() -> None:
    import sys

    from t2c_monitor.cli.common import print_error
    from t2c_monitor.errors import T2CError
    from t2c_monitor.settings import configure_logging

    try:
        configure_logging()
        app()
    except T2CError as exc:  # raised outside a command's own user_errors() block
        print_error(exc)
        sys.exit(2)
