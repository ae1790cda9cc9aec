"""Cosine similarities against a concept bank, and zero-shot classification with them.

Everything here works on plain tensors: embeddings are aligned image vectors (or CLIP image
vectors) of shape ``(n, d)``, bank or class vectors are text vectors ``(k, d)``. Both sides are
normalised here, so callers may pass raw aligner outputs. Checking that both sides live in the
same CLIP space is the caller's job (``t2c_monitor.concepts.check_same_space``).

``zero_shot_folder`` runs the paper's zero-shot test on a labelled image folder: an encoder plus
its aligner against CLIP's own image tower, with the same class prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from t2c_monitor.device import resolve_device
from t2c_monitor.errors import ConfigError
from t2c_monitor.sources import IMAGE_EXTENSIONS


def _check_pair(embeddings: Tensor, vectors: Tensor, vectors_name: str) -> None:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be 2-d (n, d), got shape {tuple(embeddings.shape)}")
    if vectors.ndim != 2:
        raise ValueError(f"{vectors_name} must be 2-d (k, d), got shape {tuple(vectors.shape)}")
    if embeddings.shape[1] != vectors.shape[1]:
        raise ValueError(
            f"embeddings have width {embeddings.shape[1]} but {vectors_name} have width {vectors.shape[1]}: "
            "align the embeddings into the CLIP space the vectors were encoded in"
        )
    if vectors.shape[0] == 0:
        raise ValueError(f"{vectors_name} is empty: give at least one vector")


def cosine_scores(
    embeddings: Tensor,
    bank_vectors: Tensor,
    batch_size: int = 65536,
    device: str | torch.device | None = None,
) -> Tensor:
    """Cosine similarity of every embedding with every bank vector: ``(n, k)`` float32 on CPU.

    Embeddings are processed ``batch_size`` rows at a time on ``device`` (the configured device
    by default) so millions of rows never need to sit on the accelerator at once. A zero
    embedding scores 0 against every concept rather than NaN.
    """
    _check_pair(embeddings, bank_vectors, "bank_vectors")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    bank = F.normalize(bank_vectors.to(dev, torch.float32), dim=1)
    out = torch.empty((embeddings.shape[0], bank_vectors.shape[0]), dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, embeddings.shape[0], batch_size):
            chunk = embeddings[start : start + batch_size].to(dev, torch.float32)
            out[start : start + chunk.shape[0]] = (F.normalize(chunk, dim=1) @ bank.T).cpu()
    return out


def zero_shot_predict(embeddings: Tensor, class_vectors: Tensor) -> Tensor:
    """Index of the most similar class vector for each embedding: ``(n,)`` long."""
    return cosine_scores(embeddings, class_vectors).argmax(dim=1)


def zero_shot_accuracy(embeddings: Tensor, class_vectors: Tensor, labels: Tensor) -> float:
    """Fraction of embeddings whose nearest class vector is their label."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must be 1-d with one entry per embedding ({embeddings.shape[0]}), got shape {tuple(labels.shape)}"
        )
    if labels.shape[0] == 0:
        raise ValueError("embeddings is empty: accuracy of zero images is undefined")
    predictions = zero_shot_predict(embeddings, class_vectors)
    return float((predictions == labels.to(torch.long)).float().mean().item())


# ----------------------------------------------------------------------------------------------
# zero-shot classification of a labelled image folder

@dataclass
class ZeroShotReport:
    """Zero-shot accuracy of an aligned encoder next to CLIP's own, on the same images."""

    root: str
    classes: list[str]
    prompts_for: list[str]
    n_images: int
    accuracy: float
    clip_accuracy: float
    per_class: dict[str, dict[str, float]]
    failed: list[dict[str, str]] = field(default_factory=list)
    encoder: dict | None = None
    clip: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def class_folder_images(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Images directly inside ``root/<class_name>/``: (paths, label indices, sorted class names).

    Image files are those ingest lists (``t2c_monitor.sources.IMAGE_EXTENSIONS``); a subfolder
    without images is no class. Images elsewhere under ``root`` are not listed.
    """
    paths, labels, classes = [], [], []
    for class_dir in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            continue
        classes.append(class_dir.name)
        paths.extend(files)
        labels.extend([len(classes) - 1] * len(files))
    return paths, labels, classes


def list_labelled_images(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """``class_folder_images`` of an existing folder with at least two classes (``ConfigError`` otherwise)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(
            f"Image folder {str(root)!r} does not exist: give a folder laid out as ROOT/<class_name>/*.png."
        )
    paths, labels, classes = class_folder_images(root)
    if len(classes) < 2:
        raise ConfigError(f"Image folder {str(root)!r} has {len(classes)} class folder(s) with images: zero-shot "
                          "classification needs at least two, laid out as ROOT/<class_name>/*.png|jpg.")
    return paths, labels, classes


def class_prompt(class_name: str) -> str:
    """The phrase a class folder stands for: underscores become spaces (``red_car`` -> ``red car``)."""
    return class_name.replace("_", " ").strip()


def class_text_vectors(clip: Any, classes: Sequence[str], templates: str | Sequence[str] | None = None) -> Tensor:
    """One unit text vector per class folder name: its phrase in every template, averaged as concept banks are."""
    from t2c_monitor.concepts import encode_texts_as_concepts
    from t2c_monitor.templates import resolve_templates

    template_list = resolve_templates(templates)
    return encode_texts_as_concepts(clip, [[t.format(class_prompt(c)) for t in template_list] for c in classes])


def zero_shot_folder(
    root: str | Path,
    encoder: Any,
    aligner: Any,
    clip: Any,
    *,
    templates: str | Sequence[str] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> ZeroShotReport:
    """Classify every image under ``root`` by its nearest class text vector, twice: through
    ``encoder`` + ``aligner`` and through ``clip``'s own image tower.

    ``encoder`` is a ``SourceEncoder``, ``clip`` a ``ClipModel`` and ``aligner`` an ``Aligner``
    joining their spaces (checked: a mismatch raises ``SpaceMismatchError``). Class vectors are
    the class names in ``templates`` (the paper's 7 by default), averaged as concept banks are.
    Images are decoded as ingest decodes them (``t2c_monitor.images``); those that cannot be are
    listed in ``failed`` with the reason and left out of both accuracies.
    """
    from t2c_monitor.encoders import batch_starts
    from t2c_monitor.images import load_files

    aligner.check_models(source=encoder.identity, clip=clip.identity)
    paths, labels, classes = list_labelled_images(root)
    phrases = [class_prompt(c) for c in classes]
    class_vectors = class_text_vectors(clip, classes, templates)
    aligned_pred, clip_pred_parts, kept, failed = [], [], [], []  # predictions only: a large folder is never held
    for start in batch_starts(len(paths), batch_size, "zero-shot: encoding images", progress):
        batch = range(start, min(start + batch_size, len(paths)))
        images, decoded, batch_failed = load_files([paths[i] for i in batch])
        kept.extend(batch[i] for i in decoded)
        failed.extend(batch_failed)
        if images:
            aligned = aligner.transform(encoder.encode_images(images, batch_size=batch_size))
            aligned_pred.append(zero_shot_predict(aligned, class_vectors))
            clip_pred_parts.append(zero_shot_predict(clip.encode_images(images, batch_size=batch_size), class_vectors))
    if not kept:
        raise ConfigError(f"No image under {str(root)!r} could be decoded ({len(failed)} failed): check the files.")
    y = torch.tensor([labels[i] for i in kept], dtype=torch.long)
    pred, clip_pred = torch.cat(aligned_pred), torch.cat(clip_pred_parts)
    per_class = {
        name: {"n": int((y == c).sum()), "accuracy": float((pred[y == c] == c).float().mean()),
               "clip_accuracy": float((clip_pred[y == c] == c).float().mean())}
        for c, name in enumerate(classes) if bool((y == c).any())
    }
    return ZeroShotReport(
        root=str(root), classes=classes, prompts_for=phrases, n_images=len(kept),
        accuracy=float((pred == y).float().mean()), clip_accuracy=float((clip_pred == y).float().mean()),
        per_class=per_class, failed=failed, encoder=encoder.identity.to_dict(), clip=clip.identity.to_dict(),
    )


def zero_shot(folder: str | Path, *, encoder: str, aligner: str | Path, clip: str,
              templates: str | Sequence[str] | None = None, device: str | None = None, batch_size: int = 64,
              progress: bool = False) -> ZeroShotReport:
    """The use case behind `t2c zeroshot`: load the encoder, the CLIP model and the aligner between
    them (refused when fitted for other models), and classify a labelled folder both ways."""
    from t2c_monitor.aligner import Aligner
    from t2c_monitor.encoders import create_clip_model, create_source_encoder

    source = create_source_encoder(encoder, device=device)
    clip_model = create_clip_model(clip, device=device)
    fitted = Aligner.load(aligner, expect_source=source.identity, expect_clip=clip_model.identity)
    return zero_shot_folder(folder, source, fitted, clip_model, templates=templates, batch_size=batch_size,
                            progress=progress)
