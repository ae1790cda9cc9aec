"""Labelled images for concept bottleneck models: read, decoded and embedded as ingest does it.

A labelled set is a folder laid out ``ROOT/<class_name>/*.png`` (the zero-shot layout), or a
manifest (``.jsonl``/``.csv``, as ``t2c ingest`` reads) whose rows carry the label in a column
(``label`` unless told otherwise). Images that cannot be read, and manifest rows without a label,
are skipped with their reason; the rest are embedded by the monitor's source encoder (the raw
features, for the linear probe) and mapped by its aligner (the aligned vectors, for the concepts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from t2c_monitor.errors import ConfigError
from t2c_monitor.uris import SourceItem


@dataclass(frozen=True)
class Skipped:
    uri: str
    reason: str


@dataclass
class LabelledSet:
    """Items and their labels (None where unknown: images to explain, not to fit on)."""

    items: list[SourceItem]
    labels: list[str | None]
    skipped: list[Skipped]


def read_labelled(source: str | Path, *, label_key: str = "label", need_labels: bool = True) -> LabelledSet:
    """The images of a class-folder tree or a manifest, with their labels."""
    from t2c_monitor.manifests import MANIFEST_SUFFIXES
    from t2c_monitor.scoring import class_folder_images
    from t2c_monitor.sources import resolve_source

    path = Path(str(source))
    if path.is_dir():
        paths, labels, classes = class_folder_images(path)
        if len(classes) >= 2:
            return LabelledSet([SourceItem(uri=str(p)) for p in paths], [classes[i] for i in labels], [])
        if need_labels:
            raise ConfigError(f"{path} has {len(classes)} class folder(s) with images: give a folder laid out as "
                              "ROOT/<class_name>/*.png with at least two classes, or a manifest with a "
                              f"'{label_key}' column.")
    elif need_labels and path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ConfigError(f"{source}: give labelled images as a folder ROOT/<class_name>/*.png or a manifest "
                          f"({', '.join(sorted(MANIFEST_SUFFIXES))}) with a '{label_key}' column.")
    items = resolve_source(str(source))
    if not items:
        raise ConfigError(f"{source} holds no images.")
    labels: list[str | None] = []
    skipped: list[Skipped] = []
    kept: list[SourceItem] = []
    for item in items:
        value = item.meta.get(label_key)
        if need_labels and (value is None or str(value).strip() == ""):
            skipped.append(Skipped(item.uri, f"no '{label_key}' value in its manifest row"))
            continue
        kept.append(item)
        labels.append(None if value is None else str(value))
    return LabelledSet(kept, labels, skipped)


@dataclass
class Embedded:
    """The readable images of a set: their URIs, labels, raw source features and aligned vectors."""

    uris: list[str]
    labels: list[str | None]
    features: Tensor  # (n, d_in)
    aligned: Tensor  # (n, d), not normalised
    skipped: list[Skipped]


def embed(models: Any, labelled: LabelledSet, *, chunk: int = 256, progress: bool = False) -> Embedded:
    """Decode the set's images (a bad one is skipped with its reason), encode and align them."""
    from t2c_monitor.images import DecodedImage, load_image
    from t2c_monitor.progress import progress_bar

    uris, labels, features, skipped = [], [], [], list(labelled.skipped)
    with progress_bar("embedding labelled images", len(labelled.items), progress) as advance:
        for start in range(0, len(labelled.items), chunk):
            part = range(start, min(start + chunk, len(labelled.items)))
            images = []
            for i in part:
                loaded = load_image(labelled.items[i])
                if isinstance(loaded, DecodedImage):
                    images.append(loaded.image)
                    uris.append(loaded.uri)
                    labels.append(labelled.labels[i])
                else:
                    skipped.append(Skipped(loaded.uri, loaded.reason))
            if images:
                features.append(models.encoder.encode_images(images))
            advance(len(part))
    if not features:
        raise ConfigError(f"None of the {len(labelled.items)} images could be read ({len(skipped)} skipped; first: "
                          f"{skipped[0].reason if skipped else 'none'}).")
    raw = torch.cat(features)
    return Embedded(uris, labels, raw, models.aligner.transform(raw), skipped)
