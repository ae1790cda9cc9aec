"""``t2c aligner fit`` and ``t2c aligner eval``: fit an aligner from paired features or images, and score it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from t2c_monitor.cli.common import JsonOption, TemplateOption, console, emit_json, user_errors

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch

    from t2c_monitor.aligner import Aligner, AlignmentMetrics, PairedFeatures

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
    ridge: float = typer.Option(0.0, "--ridge", help="Ridge penalty on W (exact only), on the feature-variance scale."),
    holdout: float = typer.Option(0.1, "--holdout", help="Fraction of pairs held out for R², cosine, accuracy."),
    seed: int = typer.Option(0, "--seed", help="Seed of the holdout split and of SGD."),
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
    if method not in ("exact", "sgd"):
        raise typer.BadParameter(f"use 'exact' or 'sgd', got {method!r}", param_hint="--method")
    if not 0.0 <= holdout < 1.0:
        raise typer.BadParameter(f"must be in [0, 1), got {holdout}", param_hint="--holdout")
    if method == "sgd" and ridge != 0.0:
        raise typer.BadParameter(
            "the SGD recipe has its own weight decay; --ridge is for --method exact", param_hint="--ridge"
        )
    if chunk_rows < 1:
        raise typer.BadParameter(f"must be >= 1, got {chunk_rows}", param_hint="--chunk-rows")
    if precision not in ("float64", "mixed"):
        raise typer.BadParameter(f"use 'float64' or 'mixed', got {precision!r}", param_hint="--precision")
    with user_errors(), tempfile.TemporaryDirectory(prefix="t2c-aligner-") as scratch:
        started = time.perf_counter()
        paired, failed, notes = _paired_source(
            features, images, encoder, clip, device, save_features, Path(scratch), templates
        )
        warnings = notes + _unrecorded_identities(paired, fitting=True)
        fitted = _fit_and_score(paired, method, ridge, holdout, seed, chunk_rows, device, precision)
        aligner, metrics, n_holdout = fitted
        aligner.metrics = {**metrics.to_dict(), "split": "holdout" if n_holdout else "train"}
        aligner.save(out)
        payload = {
            "path": str(out),
            "method": aligner.method,
            "d_in": aligner.d_in,
            "d_out": aligner.d_out,
            "n_train": aligner.n_train,
            "n_holdout": n_holdout,
            "metrics": aligner.metrics,
            "source": aligner.source,
            "clip": aligner.clip,
            "fit_info": {k: v for k, v in aligner.fit_info.items() if k != "epoch_losses_scaled"},
            "failed": failed,
            "warnings": warnings,
            "seconds": round(time.perf_counter() - started, 3),
        }
    if as_json:
        emit_json(payload)
        return
    console.print(f"[green]aligner written[/] to {out} ({aligner.method}, {aligner.d_in} -> {aligner.d_out})")
    _print_metrics(aligner.metrics, "held-out" if n_holdout else "training (no holdout)")
    if n_holdout and "r2_train" in aligner.fit_info:  # far above the held-out R²: the aligner overfits
        console.print(f"in-sample R² {aligner.fit_info['r2_train']:.4f} on {aligner.n_train} training pairs")
    _print_problems(failed, warnings)


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
    from t2c_monitor.aligner import Aligner, evaluate_chunks

    if chunk_rows < 1:
        raise typer.BadParameter(f"must be >= 1, got {chunk_rows}", param_hint="--chunk-rows")
    with user_errors(), tempfile.TemporaryDirectory(prefix="t2c-aligner-") as scratch:
        paired, failed, notes = _paired_source(features, images, encoder, clip, device, None, Path(scratch), templates)
        warnings = notes + _unrecorded_identities(paired, fitting=False)
        aligner = Aligner.load(aligner_path, expect_source=paired.source, expect_clip=paired.clip)
        class_vectors = paired.get("class_vectors")
        labelled = class_vectors is not None and paired.get("labels") is not None

        metrics = evaluate_chunks(
            aligner,
            _row_chunks(paired, chunk_rows, labels=labelled),
            class_vectors=class_vectors if labelled else None,
            source_accuracy=source_accuracy,
            progress=not as_json,
            total_rows=paired.n,
        )
        payload = {
            "aligner": str(aligner_path),
            "method": aligner.method,
            "metrics": metrics.to_dict(),
            "failed": failed,
            "warnings": warnings,
        }
    if as_json:
        emit_json(payload)
        return
    console.print(f"aligner {aligner_path} ({aligner.method}, {aligner.d_in} -> {aligner.d_out}) on {paired.path}")
    _print_metrics(metrics.to_dict(), "evaluation")
    _print_problems(failed, warnings)


def _unrecorded_identities(paired: PairedFeatures, *, fitting: bool) -> list[str]:
    """Warnings for a feature file that does not say which models made it (nothing can be checked)."""
    roles = (("source encoder", paired.source), ("CLIP model", paired.clip))
    missing = [role for role, identity in roles if not identity]
    if not missing:
        return []
    consequence = "the aligner fitted on it records none either" if fitting else "the aligner's models were not checked"
    return [
        f"feature file {paired.path} records no {' or '.join(missing)} identity, so {consequence}: write it with "
        "`t2c aligner fit --images DIR --save-features FILE`, or with save_feature_file(..., source=..., clip=...)"
    ]


def _print_problems(failed: list[dict[str, str]], warnings: list[str]) -> None:
    for failure in failed:
        console.print(f"[yellow]skipped[/] {failure['path']}: {failure['reason']}", highlight=False)
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _paired_source(
    features: Path | None,
    images: Path | None,
    encoder: str | None,
    clip: str | None,
    device: str | None,
    save_features: Path | None,
    scratch: Path,
    templates: list[str] | None = None,
) -> tuple[PairedFeatures, list[dict[str, str]], list[str]]:
    """The pairs to work on, the images that could not be decoded (path and reason), and notes for the user.

    A feature file is used as it is. An image folder is embedded by both models, into
    ``save_features`` or a file in ``scratch``.
    """
    from t2c_monitor.aligner import open_feature_file

    if (features is None) == (images is None):
        raise typer.BadParameter(
            "give exactly one of --features FILE or --images DIR", param_hint="--features/--images"
        )
    if features is not None:
        if save_features is not None:
            raise typer.BadParameter("only with --images", param_hint="--save-features")
        if templates:
            raise typer.BadParameter("class prompts are for --images class folders", param_hint="--template")
        return open_feature_file(features), [], []
    if encoder is None or clip is None:
        raise typer.BadParameter("--images needs both --encoder SPEC and --clip SPEC", param_hint="--encoder/--clip")
    target = save_features if save_features is not None else scratch / "pairs.safetensors"
    failed, notes = _embed_folder(images, encoder, clip, device, target, templates or None)
    return open_feature_file(target), failed, notes


def _folder_images(folder: Path) -> tuple[list[Path], list[int] | None, list[str], list[str]]:
    """Image files under ``folder`` (ingest's extensions), sorted, and labels with their class names
    when every image sits directly in a class subfolder ``folder/<class_name>/`` (at least two), as
    `t2c zeroshot` reads a folder. The last item says why class subfolders gave no labels."""
    from t2c_monitor.scoring import class_folder_images
    from t2c_monitor.sources import IMAGE_EXTENSIONS

    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    labelled, labels, classes = class_folder_images(folder)
    if len(classes) >= 2 and len(labelled) == len(paths):
        order = sorted(range(len(labelled)), key=lambda i: labelled[i])
        return [labelled[i] for i in order], [labels[i] for i in order], classes, []
    notes = []
    if len(classes) >= 2:
        outside = len(paths) - len(labelled)
        example = next(p for p in paths if p.parent.parent != folder)
        notes.append(
            f"{folder} has {len(classes)} class subfolders but {outside} image{'s' if outside != 1 else ''} "
            f"outside them (directly in the folder or deeper, e.g. {example}), so no labels were taken and no "
            "zero-shot accuracy is reported: lay it out as DIR/<class_name>/* for that"
        )
    return paths, None, [], notes


def _embed_folder(
    folder: Path,
    encoder_spec: str,
    clip_spec: str,
    device: str | None,
    target: Path,
    templates: str | list[str] | None,
) -> tuple[list[dict[str, str]], list[str]]:
    """Embed every image under ``folder`` with the source encoder and CLIP; write the pairs to ``target``.

    Images are decoded as ingest decodes them (EXIF orientation, transparency on white); one that
    cannot be is skipped and returned with its reason. Class subfolders add labels and class text
    vectors (the class names in ``templates``) for zero-shot accuracy. Returns the failures and
    notes on how the folder was read.
    """
    import torch
    from rich.progress import Progress

    from t2c_monitor.aligner import FeatureFileWriter
    from t2c_monitor.encoders import create_clip_model, create_source_encoder
    from t2c_monitor.errors import T2CError
    from t2c_monitor.images import load_files
    from t2c_monitor.scoring import class_text_vectors
    from t2c_monitor.sources import IMAGE_EXTENSIONS

    if not folder.is_dir():
        raise T2CError(f"image folder {folder} does not exist: pass a directory of images with --images")
    paths, labels, classes, notes = _folder_images(folder)
    if len(paths) < 2:
        kinds = " ".join(sorted(IMAGE_EXTENSIONS))
        raise T2CError(f"image folder {folder} holds {len(paths)} images ({kinds}): need at least 2")
    if labels is None and templates is not None:
        notes.append("--template only words class prompts: without class subfolders it was not used")
    with console.status("loading the source encoder and the CLIP model"):
        source = create_source_encoder(encoder_spec, device=device)
        clip_model = create_clip_model(clip_spec, device=device)
    n_kept = 0
    failed: list[dict[str, str]] = []
    with Progress(console=console) as progress, FeatureFileWriter(target) as writer:
        task = progress.add_task("embedding images", total=len(paths))
        for start in range(0, len(paths), 256):  # written as they come: a large folder is never held whole
            batch = range(start, min(start + 256, len(paths)))
            images, decoded, batch_failed = load_files([paths[i] for i in batch])
            failed.extend(batch_failed)
            if images:
                batch_labels = None if labels is None else torch.tensor([labels[batch[i]] for i in decoded])
                writer.append(source.encode_images(images), clip_model.encode_images(images), batch_labels)
                n_kept += len(images)
            progress.advance(task, len(batch))
        if n_kept < 2:
            raise T2CError(
                f"only {n_kept} of {len(paths)} images under {folder} could be decoded (first failure: "
                f"{failed[0]['path']}: {failed[0]['reason']}): need at least 2"
            )
        writer.finish(
            class_vectors=None if labels is None else class_text_vectors(clip_model, classes, templates),
            source=source.identity.to_dict(),
            clip=clip_model.identity.to_dict(),
        )
    return failed, notes


def _fit_and_score(
    paired: PairedFeatures,
    method: str,
    ridge: float,
    holdout: float,
    seed: int,
    chunk_rows: int,
    device: str | None,
    precision: str,
) -> tuple[Aligner, AlignmentMetrics, int]:
    """Split rows into train / holdout, fit on train (streamed for exact), evaluate on holdout."""
    import torch

    from t2c_monitor.aligner import evaluate_chunks, fit_exact, fit_sgd

    n_holdout = round(holdout * paired.n)
    if holdout > 0 and n_holdout < 2:
        raise typer.BadParameter(
            f"{holdout} of {paired.n} pairs is {n_holdout}: too few to evaluate", param_hint="--holdout"
        )
    if paired.n - n_holdout < 2:
        raise typer.BadParameter(f"leaves {paired.n - n_holdout} training pairs of {paired.n}", param_hint="--holdout")
    is_holdout = torch.zeros(paired.n, dtype=torch.bool)
    is_holdout[torch.randperm(paired.n, generator=torch.Generator().manual_seed(seed))[:n_holdout]] = True
    has_labels = paired.get("class_vectors") is not None and paired.get("labels") is not None
    train = ((X, Y) for X, Y, _ in _row_chunks(paired, chunk_rows, keep=~is_holdout))
    if method == "exact":
        n_train = paired.n - n_holdout
        aligner = fit_exact(train, ridge=ridge, progress=True, device=device, total_rows=n_train, precision=precision)
    else:  # the recipe shuffles every epoch: its pairs are in memory
        parts = list(train)
        X_train, Y_train = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        aligner = fit_sgd(X_train, Y_train, seed=seed, progress=True, device=device)
    aligner.source, aligner.clip = paired.source, paired.clip
    metrics = evaluate_chunks(  # a second pass over the file: the held-out rows are never collected
        aligner,
        _row_chunks(paired, chunk_rows, keep=is_holdout if n_holdout else None, labels=has_labels),
        class_vectors=paired.get("class_vectors") if has_labels else None,
        progress=True,
        total_rows=n_holdout or paired.n,
    )
    return aligner, metrics, n_holdout


def _row_chunks(
    paired: PairedFeatures, chunk_rows: int, *, keep: torch.Tensor | None = None, labels: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """``(X, Y, labels or None)`` chunks of the file's rows, read lazily; only rows where ``keep`` is True."""
    for start in range(0, paired.n, chunk_rows):
        stop = min(start + chunk_rows, paired.n)
        mask = None if keep is None else keep[start:stop]
        if mask is not None and not bool(mask.any()):
            continue
        X, Y = paired.rows("X", start, stop), paired.rows("Y", start, stop)
        y_labels = paired.rows("labels", start, stop) if labels else None
        if mask is not None:
            X, Y = X[mask], Y[mask]
            y_labels = None if y_labels is None else y_labels[mask]
        yield X, Y, y_labels


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
