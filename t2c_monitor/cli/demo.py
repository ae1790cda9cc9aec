"""``t2c demo``: the embedded default, end to end."""

from __future__ import annotations

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, user_errors


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(as_json: bool = JsonOption) -> None:
    """Start the database (embedded unless T2C_DATABASE_URL is set), migrate it, and show the state."""
    from t2c_monitor.settings import get_settings
    from t2c_monitor.store import migrate, open_database

    settings = get_settings()
    with user_errors():
        with console.status("starting the database and migrating to head"):
            db = open_database(settings)
        state = migrate.status(db.engine)
    payload = {
        "database_url": db.url,
        "embedded": db.embedded,
        "schema_revision": state.current,
        "schema_at_head": state.at_head,
        "home": str(settings.home),
        "pgdata": str(settings.pgdata) if db.embedded else None,
    }
    if as_json:
        emit_json(payload)
        return
    where = f"embedded PostgreSQL in {settings.pgdata}" if db.embedded else "external PostgreSQL"
    console.print(f"[green]database ready[/]: {where}")
    console.print(f"  url:    {db.url}")
    console.print(f"  schema: {state.current} (head: {state.head})")
    console.print(f"  state:  {settings.home}")
