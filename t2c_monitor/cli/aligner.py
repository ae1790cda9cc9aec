"""``t2c aligner fit`` and ``t2c aligner eval``: fit an aligner from paired features or images, and score it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from t2c_monitor.cli.common import JsonOption, TemplateOption, console, emit_json, styled, user_errors
from t2c_monitor.identity import as_dict

aligner_app = typer.Typer(help="Fit and evaluate aligners (source features -> CLIP image space).", no_args_is_help=True)

FeaturesOption = typer.Option(
    None, "--features", help="Paired features: .safetensors or .npz holding X (n, d_in) and Y (n, d_out)."
)
ImagesOption = typer.Option(
    None,
    "--images",
    help="Folder of images to embed with --encoder and --clip. Laid out as DIR/<class_name>/*, the class "
    "names also give zero-shot and retained accuracy.",
)
EncoderOption = typer.Option(None, "--encoder", help="Source encoder spec (timm name or model path), with --images.")
ClipOption = typer.Option(None, "--clip", help="CLIP model spec (open_clip name or config path), with --images.")
DeviceOption = typer.Option(None, "--device", help="Torch device (default: T2C_DEVICE, 'auto').")


def register(app: typer.Typer) -> None:
    app.add_typer(aligner_app, name="aligner")


@aligner_app.command("fit")
def fit(
    out: Path = typer.Option(..., "--out", help="Directory to write the aligner to (aligner.json + weights)."),
    features: Path | None = FeaturesOption,
    images: Path | None = ImagesOption,
    encoder: str | None = EncoderOption,
    clip: str | None = ClipOption,
    method: str = typer.Option("exact", "--method", help="exact (streamed least squares) or sgd (the paper's recipe)."),
    ridge: str = typer.Option(
        "auto", "--ridge", help="Ridge penalty on W (exact only), on the feature-variance scale; auto: chosen on a "
        "fifth of the training pairs (what few images and many features need)."
    ),
    holdout: float = typer.Option(0.1, "--holdout", help="Fraction of pairs held out for R², cosine, accuracy."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed of the holdout split and of SGD."),
    chunk_rows: int = typer.Option(8192, "--chunk-rows", help="Rows per chunk when streaming a feature file."),
    precision: str = typer.Option(
        "float64", "--precision", help="exact only: float64 chunk products, or mixed (float32 products, float64 sums)."
    ),
    save_features: Path | None = typer.Option(
        None, "--save-features", help="With --images: also write the paired embeddings to this file."
    ),
    templates: list[str] = TemplateOption,
    device: str | None = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Fit an aligner and store it with the identities of both models and its held-out metrics."""
    from t2c_monitor.aligner import fit_aligner

    with user_errors(), _setting_errors():
        result = fit_aligner(
            out=out,
            features=features,
            images=images,
            encoder=encoder,
            clip=clip,
            templates=templates,
            save_features=save_features,
            method=method,
            ridge=ridge,
            holdout=holdout,
            seed=seed,
            chunk_rows=chunk_rows,
            precision=precision,
            device=device,
            progress=True,
            status=console.status,
        )
    aligner, n_holdout = result.aligner, result.n_holdout
    if as_json:
        emit_json({
            "path": str(out),
            "method": aligner.method,
            "d_in": aligner.d_in,
            "d_out": aligner.d_out,
            "n_train": aligner.n_train,
            "n_holdout": n_holdout,
            "metrics": aligner.metrics,
            "source": as_dict(aligner.source),
            "clip": as_dict(aligner.clip),
            "fit_info": {k: v for k, v in aligner.fit_info.items() if k != "epoch_losses_scaled"},
            "failed": result.failed,
            "warnings": result.warnings,
            "seconds": result.seconds,
        })
        return
    console.print(styled("[green]aligner written[/] to {} ({}, {} -> {})", out, aligner.method, aligner.d_in,
                         aligner.d_out))
    _print_metrics(aligner.metrics, "held-out" if n_holdout else "training (no holdout)")
    if n_holdout and "r2_train" in aligner.fit_info:  # far above the held-out R²: the aligner overfits
        console.print(f"in-sample R² {aligner.fit_info['r2_train']:.4f} on {aligner.n_train} training pairs")
    search = aligner.fit_info.get("ridge_search")
    if isinstance(search, list):
        console.print(f"ridge {aligner.fit_info['ridge']:.3g} (auto: the best of {len(search)} penalties on a "
                      "fifth of the training pairs; --ridge sets one)")
    elif search:
        console.print(f"ridge 0 (auto: {search})")
    _print_problems(result.failed, result.warnings)


@aligner_app.command("eval")
def evaluate_command(
    aligner_path: Path = typer.Argument(..., metavar="ALIGNER", help="Directory written by `t2c aligner fit`."),
    features: Path | None = FeaturesOption,
    images: Path | None = ImagesOption,
    encoder: str | None = EncoderOption,
    clip: str | None = ClipOption,
    source_accuracy: float | None = typer.Option(
        None, "--source-accuracy", help="The source model's own accuracy, reported next to the aligned accuracy."
    ),
    templates: list[str] = TemplateOption,
    chunk_rows: int = typer.Option(65536, "--chunk-rows", help="Rows per chunk read from the feature file."),
    device: str | None = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Score a saved aligner on paired features or images (refused if they come from other models)."""
    from t2c_monitor.aligner import evaluate_aligner

    with user_errors(), _setting_errors():
        result = evaluate_aligner(
            aligner_path,
            features=features,
            images=images,
            encoder=encoder,
            clip=clip,
            templates=templates,
            source_accuracy=source_accuracy,
            chunk_rows=chunk_rows,
            device=device,
            progress=not as_json,
            status=console.status,
        )
    aligner = result.aligner
    if as_json:
        emit_json({
            "aligner": str(aligner_path),
            "method": aligner.method,
            "metrics": result.metrics.to_dict(),
            "failed": result.failed,
            "warnings": result.warnings,
        })
        return
    console.print(f"aligner {aligner_path} ({aligner.method}, {aligner.d_in} -> {aligner.d_out}) on {result.features}")
    _print_metrics(result.metrics.to_dict(), "evaluation")
    _print_problems(result.failed, result.warnings)


# the command's option for each setting the library names in a SettingError
_OPTIONS = {
    "method": "--method",
    "holdout": "--holdout",
    "ridge": "--ridge",
    "chunk_rows": "--chunk-rows",
    "precision": "--precision",
    "features/images": "--features/--images",
    "save_features": "--save-features",
    "templates": "--template",
    "encoder/clip": "--encoder/--clip",
}


@contextmanager
def _setting_errors() -> Iterator[None]:
    """Show a setting the library refuses as a bad option (usage error, exit status 2), named as typed."""
    from t2c_monitor.aligner import SettingError

    try:
        yield
    except SettingError as exc:
        raise typer.BadParameter(exc.reason, param_hint=_OPTIONS[exc.setting]) from None


def _print_problems(failed: list[dict[str, str]], warnings: list[str]) -> None:
    for failure in failed:
        console.print(styled("[yellow]skipped[/] {}: {}", failure["path"], failure["reason"]))
    for warning in warnings:
        console.print(styled("[yellow]warning:[/] {}", warning))


def _print_metrics(metrics: dict, title: str) -> None:
    from rich.table import Table

    table = Table(title=f"{title} metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if value is None:
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
