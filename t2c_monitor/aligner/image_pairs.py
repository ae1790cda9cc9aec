"""An image folder made into paired features: every image embedded by a source encoder and by CLIP.

``embed_folder`` lists the images under a folder (ingest's extensions), decodes them as ingest
does, embeds each batch with both models and writes the pairs to a feature file as they come, so
a large folder is never held whole. A folder laid out as ``DIR/<class_name>/*`` also gives labels
and class text vectors, for zero-shot and retained accuracy. This is where `t2c aligner fit` and
`eval` with ``--images`` get their pairs (through ``from_images``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from t2c_monitor.progress import progress_bar

Status = Callable[[str], AbstractContextManager[Any]]  # shows what is loading: console.status in the CLI


def embed_folder(
    folder: Path,
    encoder_spec: str,
    clip_spec: str,
    target: Path,
    *,
    templates: str | list[str] | None = None,
    device: str | None = None,
    progress: bool = False,
    status: Status | None = None,
) -> tuple[list[dict[str, str]], list[str]]:
    """Embed every image under ``folder`` with the source encoder and CLIP; write the pairs to ``target``.

    Images are decoded as ingest decodes them (EXIF orientation, transparency on white); one that
    cannot be is skipped and returned with its reason. Class subfolders add labels and class text
    vectors (the class names in ``templates``) for zero-shot accuracy. Returns the failures and
    notes on how the folder was read.
    """
    import torch

    from t2c_monitor.encoders import create_clip_model, create_source_encoder
    from t2c_monitor.errors import T2CError
    from t2c_monitor.features import FeatureFileWriter
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
    with (status or (lambda _: nullcontext()))("loading the source encoder and the CLIP model"):
        source = create_source_encoder(encoder_spec, device=device)
        clip_model = create_clip_model(clip_spec, device=device)
    n_kept = 0
    failed: list[dict[str, str]] = []
    with progress_bar("embedding images", len(paths), progress) as advance, FeatureFileWriter(target) as writer:
        for start in range(0, len(paths), 256):  # written as they come: a large folder is never held whole
            batch = range(start, min(start + 256, len(paths)))
            images, decoded, batch_failed = load_files([paths[i] for i in batch])
            failed.extend(batch_failed)
            if images:
                batch_labels = None if labels is None else torch.tensor([labels[batch[i]] for i in decoded])
                writer.append(source.encode_images(images), clip_model.encode_images(images), batch_labels)
                n_kept += len(images)
            advance(len(batch))
        if n_kept < 2:
            raise T2CError(
                f"only {n_kept} of {len(paths)} images under {folder} could be decoded (first failure: "
                f"{failed[0]['path']}: {failed[0]['reason']}): need at least 2"
            )
        writer.finish(
            class_vectors=None if labels is None else class_text_vectors(clip_model, classes, templates),
            source=source.identity,
            clip=clip_model.identity,
        )
    return failed, notes


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
