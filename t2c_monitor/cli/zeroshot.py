"""``t2c zeroshot``: zero-shot accuracy of an aligned encoder on a labelled image folder, next to CLIP's."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from t2c_monitor.cli.common import JsonOption, TemplateOption, console, emit_json, styled, user_errors


def register(app: typer.Typer) -> None:
    app.command("zeroshot")(zeroshot)


def zeroshot(
    folder: Path = typer.Argument(
        ..., help="Labelled images: FOLDER/<class_name>/*.png|jpg ('_' in names reads as a space)."),
    encoder: str = typer.Option(
        ..., "--encoder", help="Source encoder spec, e.g. timm:resnet50.a1_in1k or timm:resnet10t@w.safetensors."),
    aligner: Path = typer.Option(..., "--aligner", help="Aligner directory written by `t2c aligner fit`."),
    clip: str = typer.Option(..., "--clip", help="CLIP model spec the aligner maps into."),
    templates: list[str] = TemplateOption,
    device: str = typer.Option(None, help="Torch device (default: T2C_DEVICE, auto)."),
    batch_size: int = typer.Option(64, help="Images per batch."),
    as_json: bool = JsonOption,
) -> None:
    """Classify FOLDER's images by class-name prompts, through ENCODER + ALIGNER and through CLIP itself."""
    from t2c_monitor.scoring import zero_shot

    with user_errors():
        report = zero_shot(folder, encoder=encoder, aligner=aligner, clip=clip, templates=templates or None,
                           device=device, batch_size=batch_size, progress=not as_json)
    if as_json:
        emit_json(report.to_dict())
        return
    from rich.table import Table

    table = Table(title=f"zero-shot on {folder} ({report.n_images} images, {len(report.classes)} classes)")
    for column in ("class", "n", "aligned encoder", "CLIP"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in report.per_class.items():
        table.add_row(name, str(row["n"]), f"{row['accuracy']:.3f}", f"{row['clip_accuracy']:.3f}")
    table.add_row(Text("all", style="bold"), str(report.n_images), Text(f"{report.accuracy:.3f}", style="bold"),
                  Text(f"{report.clip_accuracy:.3f}", style="bold"))
    console.print(table)
    for failure in report.failed:
        console.print(styled("[yellow]skipped[/] {}: {}", failure["path"], failure["reason"]))
