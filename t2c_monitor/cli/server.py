"""``t2c server``: the local Prefect server of the embedded default (its scheduler runs the schedules)."""

from __future__ import annotations

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, styled, user_errors

server_app = typer.Typer(help="The local Prefect server of this T2C_HOME: runs the schedules, shows the runs in "
                              "its UI.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")


def _external() -> str | None:
    from t2c_monitor.prefect_server import configured_api_url

    return configured_api_url()


@server_app.command()
def up(as_json: bool = JsonOption) -> None:
    """Start this home's Prefect server (or find the running one) and print its UI URL."""
    from t2c_monitor.prefect_server import use_prefect_server

    with user_errors():
        endpoint = use_prefect_server()
    if as_json:
        emit_json(endpoint.to_dict())
        return
    where = f"local, pid {endpoint.pid}" if endpoint.local else "PREFECT_API_URL"
    console.print(styled("[green]Prefect server up[/] ({})", where))
    console.print(f"UI:  {endpoint.ui_url}\nAPI: {endpoint.api_url}")


@server_app.command()
def status(as_json: bool = JsonOption) -> None:
    """Whether this home's Prefect server runs (exit status 1 when it does not)."""
    from t2c_monitor.prefect_server import healthy, read_record, running_server, server_dir, ui_url_for

    external = _external()
    if external:
        ok = healthy(external)
        info = {"running": ok, "local": False, "api_url": external, "ui_url": ui_url_for(external)}
    else:
        found = running_server()
        record = found or read_record()
        info = {"running": found is not None, "local": True, **(record.to_dict() if record else {}),
                "log": str(server_dir() / "server.log")}
    if as_json:
        emit_json(info)
    elif info["running"]:
        where = f"pid {info['pid']}, since {info['started_at']}" if info["local"] else "PREFECT_API_URL"
        console.print(styled("[green]running[/]: {} (API {}, {})", info["ui_url"], info["api_url"], where))
    elif info.get("api_url"):
        console.print(styled("[red]not answering[/]: {}{}", info["api_url"],
                             f" (log {info['log']})" if info["local"] else ""))
    else:
        console.print(styled("[yellow]not running[/]: `t2c server up` starts it (every command that runs flows "
                             "does too)"))
    raise typer.Exit(code=0 if info["running"] else 1)


@server_app.command()
def url() -> None:
    """Print the Prefect UI URL (starting this home's server if needed) on stdout."""
    from t2c_monitor.prefect_server import use_prefect_server

    with user_errors():
        endpoint = use_prefect_server()
    print(endpoint.ui_url)


@server_app.command()
def stop() -> None:
    """Stop this home's local Prefect server (scheduled runs wait until it is up again)."""
    from t2c_monitor.prefect_server import stop_server

    if _external():
        console.print("PREFECT_API_URL names an external server: t2c does not stop it")
    console.print("stopped the local Prefect server" if stop_server() else "no local Prefect server was running")
