"""``t2c concepts``: turn a concept bank file into unit vectors with a CLIP text encoder."""

from __future__ import annotations

from pathlib import Path

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, user_errors

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
    console.print(
        f"bank [bold]{bank.name}[/] v{bank.version}: {bank.k} concepts x {bank.dim} dims "
        f"({len(bank.templates)} templates{f', {len(bank.classes)} classes' if bank.classes else ''}) "
        f"encoded with {bank.clip}, saved to {out}"
    )
