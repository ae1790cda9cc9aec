"""``t2c db``: where the database is and what schema it has."""

from __future__ import annotations

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, styled, user_errors

db_app = typer.Typer(help="The database: migrate, inspect, locate.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


def _engine():
    from t2c_monitor.store import open_database

    return open_database(migrate_to_head=False)


@db_app.command()
def upgrade(revision: str = typer.Option("head", help="Target revision.")) -> None:
    """Create the pgvector extension if needed and migrate the schema up."""
    from t2c_monitor.store import migrate

    with user_errors():
        db = _engine()
        migrate.upgrade(db.engine, revision)
        console.print(styled("schema at [bold]{}[/] on {}", migrate.current(db.engine), db.url))


@db_app.command()
def downgrade(revision: str = typer.Argument("-1", help="Target revision: -1 for one step, base for none.")) -> None:
    """Migrate the schema down (``base`` drops every table and its data)."""
    from t2c_monitor.store import migrate

    with user_errors():
        db = _engine()
        migrate.downgrade(db.engine, revision)
        console.print(styled("schema at [bold]{}[/] on {}", migrate.current(db.engine) or "base", db.url))


@db_app.command()
def revision(message: str = typer.Option(..., "-m", "--message", help="What the change does.")) -> None:
    """Generate a migration from changes to t2c_monitor/store/models.py (then write its docstring's why)."""
    from t2c_monitor.store import migrate

    with user_errors():
        path = migrate.new_revision(_engine().engine, message)
    console.print(f"wrote {path}: review it and say in its docstring why the change is needed")


@db_app.command()
def status(as_json: bool = JsonOption) -> None:
    """Show the database URL (password masked), its schema revision and pgvector version."""
    from t2c_monitor.store import migrate
    from t2c_monitor.store.engine import server_versions

    with user_errors():
        db = _engine()
        state = migrate.status(db.engine)
        server, pgvector = server_versions(db.engine)
    payload = {
        "url": db.url,
        "embedded": db.embedded,
        "server_version": server,
        "pgvector": pgvector,
        "current": state.current,
        "head": state.head,
        "at_head": state.at_head,
    }
    if as_json:
        emit_json(payload)
        return
    for key, value in payload.items():
        console.print(f"{key:>15}: {value}")
    if not state.at_head:
        console.print(styled("[yellow]schema is not at head: run `t2c db upgrade`[/]"))


@db_app.command()
def stop() -> None:
    """Stop the embedded PostgreSQL (the next t2c command starts it again)."""
    from t2c_monitor.settings import get_settings
    from t2c_monitor.store.embedded import stop_embedded

    settings = get_settings()
    with user_errors():
        if settings.database_url is not None:
            console.print("T2C_DATABASE_URL is set: the external server is not ours to stop.")
        elif stop_embedded(settings.pgdata):
            console.print(f"stopped the embedded PostgreSQL in {settings.pgdata}")
        else:
            console.print(f"no embedded PostgreSQL is running in {settings.pgdata}")


@db_app.command()
def url() -> None:
    """Print the database URL (password masked)."""
    with user_errors():
        typer.echo(_engine().url)


@db_app.command()
def up(as_json: bool = JsonOption) -> None:
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
    console.print(styled("[green]database ready[/]: {}", where))
    console.print(f"  url:    {db.url}")
    console.print(f"  schema: {state.current} (head: {state.head})")
    console.print(f"  state:  {settings.home}")
