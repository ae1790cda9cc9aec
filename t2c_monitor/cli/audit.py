"""``t2c baseline build`` and ``t2c audit``: compare recent images with the training baseline."""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.text import Text

from t2c_monitor.cli.common import (
    MAX_ROWS,
    JsonOption,
    console,
    emit_json,
    open_monitor,
    shown,
    styled,
    time_window,
    use_prefect,
    user_errors,
)
from t2c_monitor.wording import change_word

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
    reservoir: int = typer.Option(None, "--reservoir", min=20,
                                  help="scores kept per concept (default: the monitor's audit.reservoir)"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1),
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
    console.print(styled("[green]baseline {}[/] of {}: {} images from {} batches, {} scores kept for each of {} "
                         "concepts", summary.id, monitor, summary.n_images, len(summary.batches), summary.n_sampled,
                         summary.concepts))


def _print_alerts(outcomes: list[dict]) -> None:
    for o in outcomes:
        colour = {"sent": "green", "suppressed": "yellow"}.get(o["status"], "red")
        detail = f" after {o['attempts']} attempts: {o['error']}" if o["status"] == "failed" else ""
        console.print(styled(f"  alert {{}} to {{}}: [{colour}]{{}}[/]{{}}", o["alert_id"], o["channel"], o["status"],
                             detail))


@audit_app.callback()
def audit(
    ctx: typer.Context,
    monitor: str = typer.Option(None, "--monitor", "-m"),
    last: int = typer.Option(None, "--last", min=1, help="audit the last K stored batches"),
    batches: str = typer.Option(None, "--batches", help="comma-separated batch ids instead of --last"),
    window: str = typer.Option(None, "--window", help="the batches received in this span before now, e.g. 24h"),
    since: str = typer.Option(None, "--since", help="window start (ISO time, UTC unless given)"),
    until: str = typer.Option(None, "--until", help="window end (ISO time)"),
    alerts: bool = typer.Option(True, "--alerts/--no-alerts", help="alert the monitor's channels on flags"),
    flow: bool = typer.Option(True, "--flow/--no-flow", help="run as a Prefect flow (default) or in-process"),
    as_json: bool = JsonOption,
) -> None:
    """Audit a window of batches against the monitor's baseline (default: the monitor's audit
    settings), write the report, and alert; `t2c audit history` shows the past."""
    if ctx.invoked_subcommand is not None:
        return
    if monitor is None:
        raise typer.BadParameter("--monitor is required", param_hint="--monitor")
    start, end = time_window(window, since, until)
    with user_errors():
        if flow:
            use_prefect()
            from flows.audit import AuditParams, audit_flow

            result = audit_flow(AuditParams(monitor=monitor, last=last, batches=_batch_list(batches), since=start,
                                            until=end, alerts=alerts))
        else:
            from t2c_monitor.audit import audit_and_alert
            from t2c_monitor.settings import get_settings
            from t2c_monitor.store import open_database

            result = audit_and_alert(open_database(), monitor, last=last, batches=_batch_list(batches), since=start,
                                     until=end, report_dir=get_settings().reports_dir, alerts=alerts).to_dict()
    if as_json:
        emit_json(result)
        return
    if result.get("skipped"):  # the monitor's window holds nothing new: not an error, nothing stored
        console.print(styled("[yellow]nothing to audit[/]: {}", result["skipped"]))
        _print_alerts(result["resent"])
        return
    batches = shown(", ".join(result["batches"]))
    console.print(f"audit {result['id']} of {monitor}: {result['n_current']} images in {batches} "
                  f"against {result['n_baseline']} baseline scores per concept")
    _print_findings(result)
    console.print(f"report: {result['report']}")
    _print_alerts(result["resent"] + result["alerts"])


def _print_evidence(evidence: dict | None, top: int = 3) -> None:
    """The classes of the monitor's concept bottleneck model whose predicted share moved most, and why."""
    if not evidence or not evidence.get("classes"):
        return
    for c in evidence["classes"][:top]:
        why = ", ".join(f"{name} {part:+.2f}" for name, part in c["concepts"][:3])
        console.print(f"class {c['name']}: {c['share_before']:.0%} -> {c['share_after']:.0%} of predictions "
                      f"(logit {c['logit_shift']:+.2f}: {why})", highlight=False)


def _print_findings(result: dict) -> None:
    """The roots first, each flagged concept with the root it moves with, then the shift in words
    and any shift no concept names."""
    from rich.table import Table

    roots = set(result.get("roots") or [])
    echoes = result.get("echoes") or {}
    flagged = sorted(result["flagged"], key=lambda f: (f["name"] not in roots, f["rank"]))
    if flagged:
        table = Table("rank", "concept", "change", "cause", "KS", "q", "effect (SD)")
        for f in flagged:
            size = f"{f['effect_size']:+.2f}" if f["effect_size"] is not None else "inf"
            cause = Text("root", style="bold") if f["name"] in roots else (f"moves with {echoes[f['name']]}"
                                                                 if f["name"] in echoes else "")
            table.add_row(str(f["rank"]), shown(f["name"]), change_word(f["direction"]), cause, f"{f['ks_stat']:.3f}",
                          f"{f['q_value']:.2g}", size)
        console.print(table)
    elif not result.get("unlisted"):
        console.print(styled("[green]no concept shifted[/]"))
    from t2c_monitor.decode.drift import DriftWords

    words = result.get("words") or {}
    said = DriftWords.from_dict(words).text() if words else ""
    if said:
        console.print(styled("in words: [bold]{}[/]", said))
    if words.get("sentence"):
        console.print(f"in a sentence ({words.get('decoder')}): {words['sentence']}")
    _print_evidence(result.get("evidence"))
    if result.get("unlisted"):
        share = (result.get("explanation") or {}).get("residual_share", 1.0)
        unnamed = ", ".join(words.get("unlisted") or []) or "no words decoded"
        console.print(styled("[yellow]a shift no concept names[/]: {:.0%} of it (in words: {}); `t2c concepts "
                             "suggest --audit {} --monitor {}` proposes concepts", share, unnamed, result["id"],
                             result["monitor"]))
    if result.get("note"):
        console.print(f"note: {result['note']}")


@audit_app.command()
def history(
    monitor: str = typer.Option(..., "--monitor", "-m"),
    concept: str = typer.Option(..., "--concept", "-c"),
    limit: int = typer.Option(50, "--limit", min=1, max=MAX_ROWS),
    as_json: bool = JsonOption,
) -> None:
    """A concept's KS statistic, effect and flag over the monitor's audits."""
    from rich.table import Table

    from t2c_monitor.store.audits import concept_history

    with user_errors():
        db, record = open_monitor(monitor)
        if concept.lower() not in (n.lower() for n in record.concept_names):
            from t2c_monitor.errors import ConfigError

            raise ConfigError(f"Concept {concept!r} is not in bank {record.bank_name} v{record.bank_version}; "
                              f"it has: {', '.join(record.concept_names)}.")
        with db.engine.connect() as conn:
            rows = concept_history(conn, record.id, concept, limit=limit)
    if as_json:
        emit_json({"monitor": monitor, "concept": concept, "audits": [asdict(r) for r in rows]})
        return
    table = Table("audit", "when", "images", "KS", "q", "effect", "flagged")
    for r in rows:
        table.add_row(str(r.audit_id), f"{r.started_at:%Y-%m-%d %H:%M:%S}", str(r.n_current), f"{r.ks_stat:.3f}",
                      f"{r.q_value:.2g}", f"{r.effect:+.4f}", "yes" if r.flagged else "")
    console.print(table)


@audit_app.command("list")
def list_(
    monitor: str = typer.Option(..., "--monitor", "-m"),
    limit: int = typer.Option(20, "--limit", min=1, max=MAX_ROWS),
    as_json: bool = JsonOption,
) -> None:
    """The monitor's latest audits, newest first: done or failed (with why), batches, flags."""
    from rich.table import Column, Table

    from t2c_monitor.store.audits import list_audits

    with user_errors():
        db, record = open_monitor(monitor)
        with db.engine.connect() as conn:
            rows = list_audits(conn, record.id, limit=limit)
    if as_json:
        emit_json({"monitor": monitor, "audits": [asdict(r) for r in rows]})
        return
    if not rows:
        console.print(f"no audits of {monitor} yet")
        return
    table = Table("audit", "started", "status", "batches", "images", "flagged", Column("error", overflow="fold"))
    for r in rows:
        colour = {"done": "green", "failed": "red"}.get(r.status, "yellow")
        table.add_row(str(r.id), f"{r.started_at:%Y-%m-%d %H:%M:%S}", Text(r.status, style=colour),
                      shown(", ".join(r.batches)),
                      str(r.n_current), str(r.n_flagged), r.error or "")
    console.print(table)
