"""Paired feature files: source features ``X`` and CLIP embeddings ``Y`` of the same images, on disk.

What `t2c aligner fit --features` and `eval --features` read and `--save-features` writes: a
``.safetensors`` file (read lazily, slice by slice, so it may exceed memory; the model identities
as JSON in its header) or an ``.npz`` file, with optional ``labels`` and ``class_vectors`` for
zero-shot metrics. Kept apart from the aligner because it is a data format, not a model: the
aligner's solvers and metrics only share ``check_pairs`` with it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from t2c_monitor.errors import T2CError
from t2c_monitor.identity import ModelIdentity, as_dict
from t2c_monitor.textfiles import clip, open_regular


def check_pairs(X: Tensor, Y: Tensor) -> None:
    """Refuse ``X`` (n, d_in) and ``Y`` (n, d_out) that are not 2-d floating-point tensors with one row per pair."""
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(f"X and Y must be 2-d, got shapes {tuple(X.shape)} and {tuple(Y.shape)}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have one row per image each, got {X.shape[0]} and {Y.shape[0]} rows")
    if not (X.is_floating_point() and Y.is_floating_point()):
        raise ValueError(f"X and Y must be floating point, got {X.dtype} and {Y.dtype}")


@dataclass
class PairedFeatures:
    """Paired source features ``X`` and CLIP embeddings ``Y`` from a ``.safetensors`` or ``.npz`` file.

    Optional entries: ``labels`` (n,) and ``class_vectors`` (k, d_out) for zero-shot metrics, and
    the ``source`` / ``clip`` identities (JSON in the safetensors header, or string arrays in npz).
    A ``.safetensors`` file is read lazily, slice by slice, so it may exceed memory.
    """

    path: Path
    n: int
    d_in: int
    d_out: int
    source: ModelIdentity | None
    clip: ModelIdentity | None
    _arrays: dict = field(repr=False, default_factory=dict)

    def rows(self, key: str, start: int, stop: int) -> Tensor:
        """Rows ``[start, stop)`` of entry ``X``, ``Y`` or ``labels`` as a tensor."""
        if self.path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as handle:
                return handle.get_slice(key)[start:stop]
        return torch.from_numpy(np.ascontiguousarray(self._arrays[key][start:stop]))

    def get(self, key: str) -> Tensor | None:
        """A whole optional entry (``labels``, ``class_vectors``), or None when the file has none."""
        if key not in self._keys():
            return None
        if self.path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as handle:
                return handle.get_tensor(key)
        return torch.from_numpy(np.ascontiguousarray(self._arrays[key]))

    def _keys(self) -> set[str]:
        if self.path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as handle:
                return set(handle.keys())
        return set(self._arrays)


def open_feature_file(path: str | Path) -> PairedFeatures:
    """Open a paired feature file, checking that it holds ``X`` (n, d_in) and ``Y`` (n, d_out)."""
    path = Path(path)
    try:
        os.close(open_regular(path))  # a FIFO or a device would never end; a directory is not a file
    except OSError as exc:
        reason = "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read ({exc.strerror or exc})"
        raise T2CError(f"feature file {path} {reason}: pass a .safetensors or .npz file holding X and Y") from None
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                keys = set(handle.keys())
                shapes = {k: handle.get_slice(k).get_shape() for k in keys}
                header = handle.metadata() or {}
        except (SafetensorError, OSError) as exc:
            raise T2CError(f"feature file {path} is not a readable safetensors file ({exc}): rewrite it") from exc
        arrays: dict = {}
        identities = {k: _parse_identity(header.get(k), path, k) for k in ("source", "clip")}
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise T2CError(f"feature file {path} is not a readable .npz file ({clip(str(exc))}): rewrite it") from None
        keys = set(arrays)
        shapes = {k: list(v.shape) for k, v in arrays.items()}
        identities = {
            k: _parse_identity(str(arrays.pop(k)) if k in arrays else None, path, k) for k in ("source", "clip")
        }
    else:
        raise T2CError(f"feature file {path} has suffix {path.suffix!r}: use .safetensors or .npz holding X and Y")
    missing = {"X", "Y"} - keys
    if missing:
        raise T2CError(f"feature file {path} lacks {sorted(missing)}: it must hold X (n, d_in) and Y (n, d_out)")
    sx, sy = shapes["X"], shapes["Y"]
    if len(sx) != 2 or len(sy) != 2 or sx[0] != sy[0]:
        raise T2CError(f"feature file {path}: X {sx} and Y {sy} must be 2-d with the same number of rows")
    if sx[0] < 2:
        raise T2CError(f"feature file {path} holds {sx[0]} pairs: fitting or evaluating an aligner needs at least 2")
    if "labels" in keys and list(shapes["labels"]) != [sx[0]]:
        raise T2CError(f"feature file {path}: labels {shapes['labels']} must have one entry per row ({sx[0]})")
    return PairedFeatures(path, sx[0], sx[1], sy[1], identities["source"], identities["clip"], arrays)


def save_feature_file(
    path: str | Path,
    X: Tensor,
    Y: Tensor,
    *,
    labels: Tensor | None = None,
    class_vectors: Tensor | None = None,
    source: ModelIdentity | dict | None = None,
    clip: ModelIdentity | dict | None = None,
) -> None:
    """Write paired features as ``.safetensors`` (identities as JSON in the header) or ``.npz``."""
    with FeatureFileWriter(path) as writer:
        writer.append(X, Y, labels)
        writer.finish(class_vectors=class_vectors, source=source, clip=clip)


class FeatureFileWriter:
    """Paired features written chunk by chunk, so embedding a large image folder never holds them all.

    ``append`` rows, then ``finish`` with the optional class vectors and model identities; the file
    appears whole at ``path`` only then (written beside it and renamed), and leaving the ``with``
    block without ``finish`` leaves nothing behind. For ``.safetensors`` the rows go to raw
    scratch files beside ``path`` and are copied into place behind the header, which needs every
    tensor's size; for ``.npz`` they are kept in memory (numpy's format has no streamed writer).
    """

    _DTYPES = {"X": torch.float32, "Y": torch.float32, "labels": torch.int64}

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix not in (".safetensors", ".npz"):
            raise ValueError(f"path must end in .safetensors or .npz, got {str(self.path)!r}")
        self.n = 0
        self._widths: tuple[int, int] | None = None
        self._labelled: bool | None = None
        self._parts: dict[str, list[np.ndarray]] = {key: [] for key in self._DTYPES}
        self._scratch: dict[str, Any] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> FeatureFileWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close_scratch()

    def append(self, X: Tensor, Y: Tensor, labels: Tensor | None = None) -> None:
        """Add rows: ``X`` (n, d_in), ``Y`` (n, d_out) and, in every chunk or in none, ``labels`` (n,)."""
        X, Y = torch.as_tensor(X), torch.as_tensor(Y)
        check_pairs(X, Y)
        widths = (X.shape[1], Y.shape[1])
        if self._widths is not None and widths != self._widths:
            raise ValueError(
                f"chunk widths changed from {self._widths} to {widths}: every chunk must hold the same models"
            )
        if self._labelled is not None and self._labelled != (labels is not None):
            raise ValueError("labels must come with every chunk or with none")
        arrays = {"X": X, "Y": Y}
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (X.shape[0],):
                raise ValueError(f"labels must be 1-d with one entry per row ({X.shape[0]}), got {tuple(labels.shape)}")
            arrays["labels"] = labels
        self._widths, self._labelled = widths, labels is not None
        for key, tensor in arrays.items():
            array = tensor.detach().cpu().to(self._DTYPES[key]).contiguous().numpy()
            if self.path.suffix == ".npz":
                self._parts[key].append(array)
            else:
                if key not in self._scratch:  # closed, and so deleted, by _close_scratch
                    prefix = f".{self.path.name}.{key}."
                    self._scratch[key] = tempfile.TemporaryFile(dir=self.path.parent, prefix=prefix)  # noqa: SIM115
                self._scratch[key].write(array.tobytes())
        self.n += X.shape[0]

    def finish(
        self, *, class_vectors: Tensor | None = None, source: ModelIdentity | dict | None = None,
        clip: ModelIdentity | dict | None = None,
    ) -> None:
        """Write the file: every row appended so far, ``class_vectors`` (k, d_out) and the identities."""
        if self._widths is None:
            raise ValueError(f"no rows were appended to {self.path}: a feature file needs at least one pair")
        identities = {
            k: json.dumps(as_dict(v), sort_keys=True) for k, v in (("source", source), ("clip", clip)) if v is not None
        }
        extra = None if class_vectors is None else torch.as_tensor(class_vectors).to(torch.float32).contiguous().numpy()
        partial = self.path.with_name(f".{self.path.name}.partial")
        if self.path.suffix == ".npz":
            arrays = {key: np.concatenate(parts) for key, parts in self._parts.items() if parts}
            if extra is not None:
                arrays["class_vectors"] = extra
            with open(partial, "wb") as handle:
                np.savez(handle, **arrays, **{k: np.array(v) for k, v in identities.items()})
        else:
            self._write_safetensors(partial, extra, identities)
        os.replace(partial, self.path)

    def _write_safetensors(self, target: Path, class_vectors: np.ndarray | None, metadata: dict[str, str]) -> None:
        d_in, d_out = self._widths
        # int64 labels first, so every tensor starts aligned to its element size (the data starts 8-aligned)
        entries = [("labels", "I64", [self.n])] if self._labelled else []
        entries += [("X", "F32", [self.n, d_in]), ("Y", "F32", [self.n, d_out])]
        if class_vectors is not None:
            entries.append(("class_vectors", "F32", list(class_vectors.shape)))
        header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
        offset = 0
        for key, dtype, shape in entries:
            size = math.prod(shape) * (8 if dtype == "I64" else 4)
            header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        with open(target, "wb") as out:
            out.write(len(encoded).to_bytes(8, "little"))
            out.write(encoded)
            for key, _, _ in entries:
                if key == "class_vectors":
                    out.write(class_vectors.tobytes())
                    continue
                scratch = self._scratch[key]
                scratch.seek(0)
                shutil.copyfileobj(scratch, out, length=16 << 20)

    def _close_scratch(self) -> None:
        for handle in self._scratch.values():
            handle.close()  # a TemporaryFile is deleted when closed
        self._scratch = {}
        self.path.with_name(f".{self.path.name}.partial").unlink(missing_ok=True)


def _parse_identity(raw: str | None, path: Path, key: str) -> ModelIdentity | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise T2CError(f"feature file {path}: '{key}' identity is not valid JSON ({exc}): rewrite the file") from exc
    if not isinstance(value, dict):
        raise T2CError(f"feature file {path}: '{key}' identity must be a JSON object, got {type(value).__name__}")
    try:
        return ModelIdentity.from_dict(value)
    except (ValueError, TypeError) as exc:
        raise T2CError(f"feature file {path}: '{key}' identity is incomplete ({exc}): rewrite the file") from exc
