"""``t2c concepts``: turn a concept bank file into unit vectors with a CLIP text encoder."""

from __future__ import annotations

from pathlib import Path

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, styled, user_errors

concepts_app = typer.Typer(help="Concept banks: encode text concepts into a CLIP space.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(concepts_app, name="concepts")


@concepts_app.command()
def encode(
    bankfile: Path = typer.Argument(
        ..., help="Bank file: plain text (one concept per line, 'a | b' phrasings) or YAML."
    ),
    clip: str = typer.Option(
        ..., "--clip", help="CLIP model spec, e.g. open_clip:ViT-B-32@laion2b_s34b_b79k or open_clip:cfg.json@ckpt.pt."
    ),
    out: Path = typer.Option(..., "--out", help="Directory to write bank.json and vectors.safetensors to."),
    templates: list[str] = typer.Option(
        None,
        "--template",
        help="A template set (paper, imagenet80, plain) or a format string with '{}'; repeatable, sets and "
        "strings mix (--template paper --template '{} at dusk'). Default: the file's templates, else the paper's 7.",
    ),
    classes: list[str] = typer.Option(
        None,
        "--classes",
        help="Condition every concept on this class ('a photo of the {class} {concept}'); repeatable. "
        "Overrides the file's classes.",
    ),
    classes_file: Path = typer.Option(
        None,
        "--classes-file",
        help="A text file of class names, one per line ('#' lines skipped), added to --classes.",
    ),
    name: str = typer.Option(None, help="Bank name (default: the file's name)."),
    version: int = typer.Option(None, help="Bank version (default: the file's version, else 1)."),
    device: str = typer.Option(None, help="Torch device (default: T2C_DEVICE, auto)."),
    batch_size: int = typer.Option(256, help="Texts per text-encoder batch."),
    as_json: bool = JsonOption,
) -> None:
    """Encode BANKFILE with a CLIP model's text tower and save the bank with its vectors."""
    from t2c_monitor.concepts import encode_bank_file, read_class_names
    from t2c_monitor.identity import as_dict

    with user_errors():
        class_names = list(classes or []) + list(read_class_names(classes_file) if classes_file else [])
        bank = encode_bank_file(bankfile, clip, out=out, name=name, version=version, templates=templates,
                                classes=class_names, device=device, batch_size=batch_size, progress=not as_json)
    payload = {
        "out": str(out),
        "name": bank.name,
        "version": bank.version,
        "k": bank.k,
        "dim": bank.dim,
        "templates": len(bank.templates),
        "classes": len(bank.classes),
        "clip": as_dict(bank.clip),
    }
    if as_json:
        emit_json(payload)
        return
    classes = f", {len(bank.classes)} classes" if bank.classes else ""
    console.print(styled("bank [bold]{}[/] v{}: {} concepts x {} dims ({} templates{}) encoded with {}, saved to {}",
                         bank.name, bank.version, bank.k, bank.dim, len(bank.templates), classes, bank.clip, out))


@concepts_app.command()
def suggest(
    monitor: str = typer.Option(..., "--monitor", "-m", help="The monitor the audit belongs to."),
    audit: int = typer.Option(..., "--audit", help="An audit that reported a shift the bank does not explain."),
    top: int = typer.Option(5, "--top", min=1, max=50, help="How many terms to suggest."),
    accept: int = typer.Option(0, "--accept", min=0, help="Add the first N suggestions to the bank right away."),
    as_json: bool = JsonOption,
) -> None:
    """Concepts to add for the drift an audit found unexplained: the decoded words of its residual."""
    from t2c_monitor.concepts.maintain import change_bank, suggest_concepts
    from t2c_monitor.store import open_database

    with user_errors():
        db = open_database()
        found = suggest_concepts(db, monitor, audit, top=top)
        change = None
        if accept:
            chosen = [s.name for s in found.suggestions[:accept]]
            with console.status(f"adding {', '.join(chosen)} and rebuilding the baseline"):
                change = change_bank(db, monitor, add=chosen)
    if as_json:
        emit_json({**found.to_dict(), "accepted": change.to_dict() if change else None})
        return
    state = (f"reported drift the bank does not explain ({found.residual_share:.0%} of the shift)"
             if found.unlisted and found.residual_share is not None else "explained its drift with the bank")
    console.print(f"audit {audit} of {monitor} {state}; terms for the unexplained part:")
    for i, s in enumerate(found.suggestions, start=1):
        console.print(f"  {i}. {s.name}  (weight {s.weight:.3f})")
    if not found.suggestions:
        console.print("  (none outside the bank)")
    if change:
        _print_change(change)
    elif found.suggestions:
        console.print(f"add one with `t2c concepts add --monitor {monitor} '{found.suggestions[0].name}'` "
                      f"(or `--accept 1` here): it goes into {found.bank_file}")


@concepts_app.command()
def add(
    concepts: list[str] = typer.Argument(..., help="Concepts to add: 'name' or 'name | another phrasing | ...'."),
    monitor: str = typer.Option(..., "--monitor", "-m"),
    as_json: bool = JsonOption,
) -> None:
    """Add concepts to a monitor's bank file, apply it again (a new bank version) and rebuild the
    baseline from stored vectors, so audits go on with the new concepts."""
    _change(monitor, add=concepts, as_json=as_json)


@concepts_app.command()
def remove(
    concepts: list[str] = typer.Argument(..., help="Names of the concepts to remove."),
    monitor: str = typer.Option(..., "--monitor", "-m"),
    as_json: bool = JsonOption,
) -> None:
    """Remove concepts from a monitor's bank file, apply it again and rebuild the baseline."""
    _change(monitor, remove=concepts, as_json=as_json)


def _change(monitor: str, *, as_json: bool, add: list[str] | None = None, remove: list[str] | None = None) -> None:
    from t2c_monitor.concepts.maintain import change_bank
    from t2c_monitor.store import open_database

    with user_errors(), console.status("applying the monitor and rebuilding its baseline"):
        change = change_bank(open_database(), monitor, add=add, remove=remove)
    if as_json:
        emit_json(change.to_dict())
        return
    _print_change(change)


def _print_change(change) -> None:
    what = ", ".join([f"+{n}" for n in change.added] + [f"-{n}" for n in change.removed])
    console.print(styled("bank [bold]{}[/] v{} of {}: {} ({} concepts), written to {}", change.bank,
                         change.bank_version, change.monitor, what, change.concepts, change.bank_file))
    if change.baseline:
        console.print(f"baseline {change.baseline['id']} rebuilt from the stored vectors of "
                      f"{', '.join(change.baseline['batches'])} ({change.baseline['n_images']} images)")
    for note in change.notes:
        console.print(f"note: {note}")
