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
from rich.markup import escape
from rich.text import Text

_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {0x0A: "\n", 0x09: "\t"}
"""Control characters (C0, DEL and C1, whose 0x9b starts a terminal sequence) written out as escapes, newline
and tab kept: what a message from our code may hold."""
MAX_ROWS = 100_000
"""The most rows a listing (--limit, --top) returns."""


def _plain(text: str) -> str:
    """``text`` without raw control characters, and with bytes that were not UTF-8 (an argument or a file name
    read with surrogate escapes) written as escapes instead of failing the terminal's encoder."""
    text = text.translate(_CONTROLS)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def shown(value: object) -> str:
    """A name from outside (batch id, file name, concept, monitor) as it may be printed on one line: control
    and invisible format characters (newline, ESC, carriage return, right-to-left override) as escapes, so
    a stored name can neither forge an output line nor drive the terminal."""
    text = str(value)
    if text.isprintable():
        return _plain(text)
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class PlainConsole(Console):
    """rich's console printing every ``str`` as plain text: no markup (``[/]`` in a batch id), no emoji codes
    (``grass:+1``), no control characters but newline and tab (``\\x1b[2J``). Our own styling is built with
    ``styled``."""

    def render_str(self, text: str, **kwargs: object) -> Text:  # type: ignore[override]
        return super().render_str(_plain(text), **kwargs)  # type: ignore[arg-type]


def styled(template: str, *values: object) -> Text:
    """Our own markup ``template`` with ``{}`` fields filled by ``values``: strings from outside are shown
    (``shown``) and escaped, so they are never read as markup; numbers keep their format specs."""
    safe = [v if isinstance(v, (int, float)) and not isinstance(v, bool) else escape(shown(v)) for v in values]
    return Text.from_markup(template.format(*safe), emoji=False)


def message(exc: BaseException) -> str:
    """An exception's message as printed: our messages may span lines; any other control character is escaped."""
    return _plain(str(exc))


console = PlainConsole(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)

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
    """Show a ``T2CError`` or a ``ValueError`` (our library's word for a bad argument, which names it) as its
    message and exit with status 2, and a disk or network error (``OSError``:
    a full or read-only disk, a file that went away) as its message with status 1, instead of a traceback."""
    from t2c_monitor.errors import T2CError

    try:
        yield
    except (T2CError, ValueError) as exc:  # ValueError: a bad argument, named by the library (UnicodeError too)
        print_error(exc)
        raise typer.Exit(code=2) from None
    except OSError as exc:
        print_error(exc)
        raise typer.Exit(code=1) from None


def print_error(exc: BaseException) -> None:
    """``error: <message>`` on stderr, the message as plain text."""
    console.print(Text.assemble(("error:", "bold red"), " ", message(exc)))


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
    from t2c_monitor.durations import parse_duration

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
