"""``t2c cbm fit / eval / explain``: concept bottleneck models on a monitor's aligned space."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from t2c_monitor.cli.common import JsonOption, console, emit_json, styled, user_errors

cbm_app = typer.Typer(help="Concept bottleneck models: classify by concepts, explain by concepts.",
                      no_args_is_help=True)

DataArgument = typer.Argument(..., help="Labelled images: a folder ROOT/<class_name>/*.png, or a manifest "
                              "(.jsonl/.csv) with a label column.")
LabelOption = typer.Option(None, "--label-key", help="the manifest column holding the label (default: label, or "
                           "the one the model was fitted with)")
ModelOption = typer.Option(None, "--model", help="the model directory (default: the monitor's `cbm:` setting)")
DeviceOption = typer.Option(None, "--device", help="torch device (default: T2C_DEVICE, auto)")


def register(app: typer.Typer) -> None:
    app.add_typer(cbm_app, name="cbm")


def _skipped(skipped) -> None:
    for s in skipped[:20]:
        console.print(styled("[yellow]skipped[/] {}: {}", s.uri, s.reason))
    if len(skipped) > 20:
        console.print(styled("[yellow]... and {} more skipped[/]", len(skipped) - 20))


@cbm_app.command("fit")
def fit(
    data: str = DataArgument,
    monitor: str = typer.Option(..., "--monitor", "-m", help="the monitor whose encoder, aligner and bank to use"),
    out: Path = typer.Option(..., "--out", help="directory to save the model to"),
    label_key: str = typer.Option("label", "--label-key", help="the manifest column holding the label"),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="share of each class held out for the test"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1),
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Fit a sparse concept head (and a linear probe on raw features, to compare) on labelled images."""
    from t2c_monitor.cbm.use_cases import fit_cbm
    from t2c_monitor.store import open_database

    with user_errors():
        report = fit_cbm(open_database(), monitor, data, out=out, label_key=label_key, test_fraction=test_fraction,
                         seed=seed, device=device, progress=not as_json)
    if as_json:
        emit_json(report.to_dict())
        return
    console.print(f"saved {report.path}: {len(report.classes)} classes, trained on {report.n_train} images "
                  f"({report.n_val} validation, {report.n_test} test)", highlight=False)
    console.print(styled("test accuracy: concept bottleneck [bold]{:.3f}[/], linear probe on raw features {:.3f} "
                         "({:.2f}x)", report.accuracy, report.probe_accuracy, report.ratio))
    for name, concepts in report.concepts_used.items():
        console.print(f"  {name}: {len(concepts)} concepts ({', '.join(concepts[:8])}"
                      f"{', ...' if len(concepts) > 8 else ''})", highlight=False)
    _skipped(report.skipped)


@cbm_app.command("eval")
def evaluate(
    data: str = DataArgument,
    monitor: str = typer.Option(..., "--monitor", "-m"),
    model: Path = ModelOption,
    label_key: str = LabelOption,
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Accuracy of a concept bottleneck model (and its linear probe) on labelled images."""
    from rich.table import Table

    from t2c_monitor.cbm.use_cases import evaluate_cbm
    from t2c_monitor.store import open_database

    with user_errors():
        report = evaluate_cbm(open_database(), monitor, data, model_path=model, label_key=label_key, device=device,
                              progress=not as_json)
    if as_json:
        emit_json(report.to_dict())
        return
    table = Table(title=f"{report.n_images} images")
    for column in ("class", "n", "concept bottleneck", "linear probe"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in report.per_class.items():
        probe = row.get("probe_accuracy")
        table.add_row(name, str(row["n"]), f"{row['accuracy']:.3f}", "" if probe is None else f"{probe:.3f}")
    table.add_row(Text("all", style="bold"), str(report.n_images), Text(f"{report.accuracy:.3f}", style="bold"),
                  "" if report.probe_accuracy is None else f"{report.probe_accuracy:.3f}")
    console.print(table)
    for label, n in report.unknown_labels.items():
        console.print(styled("[yellow]not a class of the model[/]: {} ({} images)", label, n))
    _skipped(report.skipped)


@cbm_app.command("explain")
def explain(
    images: str = typer.Argument(..., help="Images: a file, folder, manifest or URI (labels are used when given)."),
    monitor: str = typer.Option(..., "--monitor", "-m"),
    model: Path = ModelOption,
    top: int = typer.Option(5, "--top", min=1, help="concepts per explanation"),
    wrong: bool = typer.Option(False, "--misclassified", help="only images whose label the model gets wrong"),
    label_key: str = LabelOption,
    device: str = DeviceOption,
    as_json: bool = JsonOption,
) -> None:
    """Why the model predicts what it does for each image: the concepts behind its logit and against the
    runner-up."""
    from t2c_monitor.cbm.use_cases import explain_cbm
    from t2c_monitor.store import open_database

    with user_errors():
        explanations, skipped = explain_cbm(open_database(), monitor, images, model_path=model, top=top,
                                            only_wrong=wrong, label_key=label_key, device=device,
                                            progress=not as_json)
    if as_json:
        emit_json({"explanations": [e.to_dict() for e in explanations],
                   "skipped": [{"uri": s.uri, "reason": s.reason} for s in skipped]})
        return
    for e in explanations:
        truth = "" if e.label is None else (" (right)" if e.correct else f" (label: {e.label})")
        console.print(styled("[bold]{}[/]: {} {:.0%}{}, runner-up {}", e.uri, e.predicted, e.probability, truth,
                             e.runner_up))
        console.print("  because: " + ", ".join(f"{s.concept} {s.share:.0%} (z {s.z:+.1f})" for s in e.evidence),
                      highlight=False)
        console.print(f"  rather than {e.runner_up}: " + ", ".join(f"{s.concept} {s.share:.0%}" for s in e.separating),
                      highlight=False)
    _skipped(skipped)
