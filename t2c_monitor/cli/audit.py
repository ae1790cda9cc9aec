"""``t2c baseline build`` and ``t2c audit``: compare recent images with the training baseline."""

from __future__ import annotations

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, user_errors

baseline_app = typer.Typer(help="Baselines: the reference concept-score distributions of a monitor.",
                           no_args_is_help=True)
audit_app = typer.Typer(help="Drift audits: a window of batches against the baseline, concept by concept.",
                        invoke_without_command=True)


def register(app: typer.Typer) -> None:
    app.add_typer(baseline_app, name="baseline")
    app.add_typer(audit_app, name="audit")


def _batch_list(value: str | None) -> list[str] | None:
    return [b.strip() for b in value.split(",") if b.strip()] if value else None


@baseline_app.command("build")
def build(
    monitor: str = typer.Option(..., "--monitor", "-m"),
    batches: str = typer.Option(None, "--batches", help="comma-separated batch ids (default: every stored batch)"),
    last: int = typer.Option(None, "--last", min=1, help="the last K stored batches instead"),
    reservoir: int = typer.Option(100_000, "--reservoir", min=20, help="scores kept per concept"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = JsonOption,
) -> None:
    """Build and activate a baseline from reference batches (e.g. a sample of the training set)."""
    from t2c_monitor.audit import build_baseline
    from t2c_monitor.store import open_database

    with user_errors():
        summary = build_baseline(open_database(), monitor, batches=_batch_list(batches), last=last,
                                 reservoir_size=reservoir, seed=seed)
    if as_json:
        emit_json(summary.to_dict())
        return
    console.print(f"[green]baseline {summary.id}[/] of {monitor}: {summary.n_images} images from "
                  f"{len(summary.batches)} batches, {summary.n_sampled} scores kept for each of {summary.concepts} concepts")


@audit_app.callback()
def audit(
    ctx: typer.Context,
    monitor: str = typer.Option(None, "--monitor", "-m"),
    last: int = typer.Option(1, "--last", min=1, help="audit the last K stored batches"),
    batches: str = typer.Option(None, "--batches", help="comma-separated batch ids instead of --last"),
    as_json: bool = JsonOption,
) -> None:
    """Audit a window of batches against the monitor's baseline; `t2c audit history` shows the past."""
    if ctx.invoked_subcommand is not None:
        return
    if monitor is None:
        raise typer.BadParameter("--monitor is required", param_hint="--monitor")
    from rich.table import Table

    from t2c_monitor.audit import run_audit
    from t2c_monitor.store import open_database

    with user_errors():
        summary = run_audit(open_database(), monitor, last=last, batches=_batch_list(batches))
    if as_json:
        emit_json(summary.to_dict())
        return
    console.print(f"audit {summary.id} of {monitor}: {summary.n_current} images in {', '.join(summary.batches)} "
                  f"against {summary.n_baseline} baseline scores per concept")
    if not summary.flagged:
        console.print("[green]no concept shifted[/]")
        return
    table = Table("rank", "concept", "change", "KS", "q", "effect (SD)")
    for f in summary.flagged:
        table.add_row(str(f["rank"]), f["name"], "more" if f["direction"] > 0 else "less", f"{f['ks_stat']:.3f}",
                      f"{f['q_value']:.2g}", f"{f['effect_size']:+.2f}")
    console.print(table)


@audit_app.command()
def history(
    monitor: str = typer.Option(..., "--monitor", "-m"),
    concept: str = typer.Option(..., "--concept", "-c"),
    limit: int = typer.Option(50, "--limit", min=1),
    as_json: bool = JsonOption,
) -> None:
    """A concept's KS statistic, effect and flag over the monitor's audits."""
    from rich.table import Table

    from t2c_monitor.store import open_database
    from t2c_monitor.store.audits import concept_history
    from t2c_monitor.store.monitors import get_monitor

    with user_errors():
        db = open_database()
        with db.session() as session:
            record = get_monitor(session, monitor)
        if concept.lower() not in (n.lower() for n in record.concept_names):
            from t2c_monitor.errors import ConfigError

            raise ConfigError(f"Concept {concept!r} is not in bank {record.bank_name} v{record.bank_version}; "
                              f"it has: {', '.join(record.concept_names)}.")
        with db.engine.connect() as conn:
            rows = concept_history(conn, record.id, concept, limit=limit)
    if as_json:
        emit_json({"monitor": monitor, "concept": concept, "audits": rows})
        return
    table = Table("audit", "when", "images", "KS", "q", "effect", "flagged")
    for r in rows:
        table.add_row(str(r["audit_id"]), str(r["started_at"])[:19], str(r["n_current"]), f"{r['ks_stat']:.3f}",
                      f"{r['q_value']:.2g}", f"{r['effect']:+.4f}", "yes" if r["flagged"] else "")
    console.print(table)
