"""The workflows behind `t2c aligner fit` and `t2c aligner eval`, as one library function each.

``fit_aligner`` fits an aligner from an image folder (every image embedded by the source encoder
and by CLIP, the pairs written to a feature file as they come; class subfolders add labels and
class text vectors for zero-shot accuracy) or from a paired feature file: the rows are split into
train and holdout, fitted (streamed least squares, or the SGD recipe), scored on the holdout and
saved with both models' identities. ``evaluate_aligner`` scores a saved aligner on such pairs,
refusing pairs of other models. The CLI only turns options into these calls and prints what they
return; a ``SettingError`` names the setting that cannot work, which the CLI shows as its option.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from t2c_monitor.aligner.exact import fit_exact
from t2c_monitor.aligner.image_pairs import Status, embed_folder
from t2c_monitor.aligner.metrics import AlignmentMetrics, evaluate_chunks
from t2c_monitor.aligner.model import Aligner, FitMethod
from t2c_monitor.aligner.sgd import fit_sgd
from t2c_monitor.features import PairedFeatures, open_feature_file


class SettingError(ValueError):
    """A workflow setting that cannot work: ``setting`` names the parameter(s), ``reason`` says why."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting, self.reason = setting, reason


@dataclass
class FitResult:
    """A fitted aligner and how the fit went; ``aligner.metrics`` is ``metrics`` as a dict, plus the split.

    ``n_holdout``: pairs held out (0: the metrics are on the training pairs). ``path``: where it
    was saved (None: not saved). ``failed``: images that could not be decoded (``path`` and
    ``reason``). ``warnings``: what the user should know about the pairs.
    """

    aligner: Aligner
    metrics: AlignmentMetrics
    n_holdout: int
    path: Path | None
    failed: list[dict[str, str]]
    warnings: list[str]
    seconds: float


@dataclass
class EvalResult:
    """A saved aligner's metrics on the pairs in ``features`` (for an image folder, a scratch file
    removed once scored), with the images that could not be decoded and warnings as in ``FitResult``."""

    aligner: Aligner
    metrics: AlignmentMetrics
    features: Path
    failed: list[dict[str, str]]
    warnings: list[str]


def fit_aligner(
    *,
    out: str | Path | None = None,
    features: str | Path | None = None,
    images: str | Path | None = None,
    encoder: str | None = None,
    clip: str | None = None,
    templates: list[str] | None = None,
    save_features: str | Path | None = None,
    method: FitMethod = "exact",
    ridge: float | str = "auto",
    holdout: float = 0.1,
    seed: int = 0,
    chunk_rows: int = 8192,
    precision: str = "float64",
    device: str | None = None,
    progress: bool = False,
    status: Status | None = None,
) -> FitResult:
    """Fit an aligner on the pairs of ``features`` (a feature file) or ``images`` (a folder), score it, save it.

    Images are embedded by ``encoder`` and ``clip`` (model specs) into ``save_features``, or a
    scratch file; class subfolders ``images/<class_name>/`` give labels, and class vectors of the
    names in ``templates``. ``holdout`` of the pairs (drawn with ``seed``) are kept out of the fit
    and scored; the rest are fitted by ``method`` ``exact`` (streamed in ``chunk_rows``, with
    ``ridge``, chosen on the training pairs when ``"auto"``, and ``precision``, see ``fit_exact``)
    or ``sgd`` (the paper's recipe, seeded). The aligner records both models' identities and its
    metrics, and is saved to ``out`` if given.
    ``status`` shows what is loading (a rich status spinner in the CLI).
    """
    started = time.perf_counter()
    if method not in ("exact", "sgd"):
        raise SettingError("method", f"use 'exact' or 'sgd', got {method!r}")
    if not 0.0 <= holdout < 1.0:
        raise SettingError("holdout", f"must be in [0, 1), got {holdout}")
    ridge = parse_ridge(ridge)
    if method == "sgd" and ridge not in (0.0, "auto"):
        raise SettingError("ridge", "the SGD recipe has its own weight decay; --ridge is for --method exact")
    _check_chunk_rows(chunk_rows)
    if precision not in ("float64", "mixed"):
        raise SettingError("precision", f"use 'float64' or 'mixed', got {precision!r}")
    with tempfile.TemporaryDirectory(prefix="t2c-aligner-") as scratch:
        paired, failed, notes = _open_pairs(
            features, images, encoder, clip, templates, save_features, Path(scratch), device, progress, status
        )
        warnings = notes + _unrecorded_identities(paired, fitting=True)
        aligner, metrics, n_holdout = _fit_and_score(
            paired, method, ridge, holdout, seed, chunk_rows, device, precision, progress
        )
        aligner.metrics = {**metrics.to_dict(), "split": "holdout" if n_holdout else "train"}
        if out is not None:
            aligner.save(out)
    path = None if out is None else Path(out)
    return FitResult(aligner, metrics, n_holdout, path, failed, warnings, round(time.perf_counter() - started, 3))


def evaluate_aligner(
    aligner: str | Path,
    *,
    features: str | Path | None = None,
    images: str | Path | None = None,
    encoder: str | None = None,
    clip: str | None = None,
    templates: list[str] | None = None,
    source_accuracy: float | None = None,
    chunk_rows: int = 65536,
    device: str | None = None,
    progress: bool = False,
    status: Status | None = None,
) -> EvalResult:
    """Score the aligner saved in directory ``aligner`` on the pairs of ``features`` or ``images``.

    The pairs come as in ``fit_aligner``, read in ``chunk_rows``; the aligner is refused if they
    come from other models than it was fitted for. ``source_accuracy`` (the source model's own
    accuracy) is reported next to the aligned zero-shot accuracy.
    """
    _check_chunk_rows(chunk_rows)
    with tempfile.TemporaryDirectory(prefix="t2c-aligner-") as scratch:
        paired, failed, notes = _open_pairs(
            features, images, encoder, clip, templates, None, Path(scratch), device, progress, status
        )
        warnings = notes + _unrecorded_identities(paired, fitting=False)
        loaded = Aligner.load(aligner, expect_source=paired.source, expect_clip=paired.clip)
        class_vectors = _class_vectors(paired)
        metrics = evaluate_chunks(
            loaded,
            _row_chunks(paired, chunk_rows, labels=class_vectors is not None),
            class_vectors=class_vectors,
            source_accuracy=source_accuracy,
            progress=progress,
            total_rows=paired.n,
        )
    return EvalResult(loaded, metrics, paired.path, failed, warnings)


def parse_ridge(ridge: float | str) -> float | str:
    """``"auto"`` or a finite penalty >= 0 (a number or its text, as typed after ``--ridge``)."""
    if isinstance(ridge, str) and ridge.strip().lower() == "auto":
        return "auto"
    try:
        value = float(ridge)
    except (TypeError, ValueError):
        raise SettingError("ridge", f"use 'auto' or a number >= 0, got {ridge!r}") from None
    if not math.isfinite(value) or value < 0:
        raise SettingError("ridge", f"use 'auto' or a number >= 0, got {ridge!r}")
    return value


def _check_chunk_rows(chunk_rows: int) -> None:
    if chunk_rows < 1:
        raise SettingError("chunk_rows", f"must be >= 1, got {chunk_rows}")


def _open_pairs(
    features: str | Path | None,
    images: str | Path | None,
    encoder: str | None,
    clip: str | None,
    templates: list[str] | None,
    save_features: str | Path | None,
    scratch: Path,
    device: str | None,
    progress: bool,
    status: Status | None,
) -> tuple[PairedFeatures, list[dict[str, str]], list[str]]:
    """The pairs to work on, the images that could not be decoded (path and reason), and notes for the user.

    A feature file is used as it is. An image folder is embedded by both models, into
    ``save_features`` or a file in ``scratch``.
    """
    if (features is None) == (images is None):
        raise SettingError("features/images", "give exactly one of --features FILE or --images DIR")
    if features is not None:
        if save_features is not None:
            raise SettingError("save_features", "only with --images")
        if templates:
            raise SettingError("templates", "class prompts are for --images class folders")
        return open_feature_file(features), [], []
    if encoder is None or clip is None:
        raise SettingError("encoder/clip", "--images needs both --encoder SPEC and --clip SPEC")
    target = Path(save_features) if save_features is not None else scratch / "pairs.safetensors"
    failed, notes = embed_folder(
        Path(images), encoder, clip, target, templates=templates or None, device=device, progress=progress,
        status=status,
    )
    return open_feature_file(target), failed, notes


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


def _class_vectors(paired: PairedFeatures) -> Tensor | None:
    """The file's class text vectors when it also has labels (zero-shot accuracy needs both), else None."""
    class_vectors = paired.get("class_vectors")
    return class_vectors if class_vectors is not None and paired.get("labels") is not None else None


def _fit_and_score(
    paired: PairedFeatures,
    method: FitMethod,
    ridge: float | str,
    holdout: float,
    seed: int,
    chunk_rows: int,
    device: str | None,
    precision: str,
    progress: bool,
) -> tuple[Aligner, AlignmentMetrics, int]:
    """Split rows into train / holdout, fit on train (streamed for exact), evaluate on holdout."""
    n_holdout = round(holdout * paired.n)
    if holdout > 0 and n_holdout < 2:
        raise SettingError("holdout", f"{holdout} of {paired.n} pairs is {n_holdout}: too few to evaluate")
    if paired.n - n_holdout < 2:
        raise SettingError("holdout", f"leaves {paired.n - n_holdout} training pairs of {paired.n}")
    is_holdout = torch.zeros(paired.n, dtype=torch.bool)
    is_holdout[torch.randperm(paired.n, generator=torch.Generator().manual_seed(seed))[:n_holdout]] = True
    class_vectors = _class_vectors(paired)
    train = ((X, Y) for X, Y, _ in _row_chunks(paired, chunk_rows, keep=~is_holdout))
    if method == "exact":
        n_train = paired.n - n_holdout
        aligner = fit_exact(
            train, ridge=ridge, progress=progress, device=device, total_rows=n_train, precision=precision
        )
    else:  # the recipe shuffles every epoch: its pairs are in memory
        parts = list(train)
        X_train, Y_train = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        aligner = fit_sgd(X_train, Y_train, seed=seed, progress=progress, device=device)
    aligner.source, aligner.clip = paired.source, paired.clip
    metrics = evaluate_chunks(  # a second pass over the file: the held-out rows are never collected
        aligner,
        _row_chunks(paired, chunk_rows, keep=is_holdout if n_holdout else None, labels=class_vectors is not None),
        class_vectors=class_vectors,
        progress=progress,
        total_rows=n_holdout or paired.n,
    )
    return aligner, metrics, n_holdout


def _row_chunks(
    paired: PairedFeatures, chunk_rows: int, *, keep: Tensor | None = None, labels: bool = False
) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
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


def fit_on_images(encoder: Any, clip: Any, images: list, *, ridge: float, batch_size: int = 256,
                  progress: bool = False) -> Aligner:
    """The exact aligner from ``encoder``'s features to ``clip``'s embeddings of in-memory images
    (PIL), with both models' identities recorded: what the shapes world, the benchmarks and the
    tests fit; ``fit_aligner`` does the same from an image folder or feature file, streamed."""
    Y = clip.encode_images(images, batch_size=batch_size, progress=progress)
    X = encoder.encode_images(images, batch_size=batch_size, progress=progress)
    aligner = fit_exact([(X, Y)], ridge=ridge)
    aligner.source, aligner.clip = encoder.identity, clip.identity
    return aligner
