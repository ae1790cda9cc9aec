"""Saved artifacts (aligners, concept banks): a directory of JSON metadata and one safetensors file.

One format for all of them, so every artifact is checked the same way when it is read: both files
present, metadata valid JSON with the artifact's ``format`` marker, a ``format_version`` this
release reads, tensors matching the sha256 recorded beside them (a replaced or corrupt file is
refused), and the tensors it needs present. Each refusal names the file and says how to make a
good one (``hint``). The metadata also records when and with which library versions it was saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from importlib import metadata as distributions
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from t2c_monitor.errors import ModelLoadError


@dataclass(frozen=True)
class ArtifactFormat:
    """One kind of artifact: its file names, format marker and version, and the fix to suggest."""

    label: str  # "aligner", "concept bank": how messages name it
    marker: str  # the metadata's "format" value
    version: int  # newest format_version this release writes and reads
    metadata_file: str
    tensors_file: str
    checksum_key: str  # the metadata key holding the tensors file's sha256
    written_by: str  # the command that writes one, for "pass the directory written by ..."
    hint: str  # how to make a good one, ending every refusal

    def write(self, directory: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
        """Save ``tensors`` and ``meta`` (plus format, checksum, versions and time) to ``directory``.

        Each file is written under a temporary name and renamed into place, the metadata last: a full
        or read-only disk raises ``OSError`` and leaves no partial file (an earlier artifact there stays
        whole, or at worst its tensors are new and its metadata old, which ``read`` refuses by checksum)."""
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors_path, meta_path = directory / self.tensors_file, directory / self.metadata_file
        staged = [directory / f".{name}.{os.getpid()}.tmp" for name in (self.tensors_file, self.metadata_file)]
        try:
            try:
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(staged[0]))
            except SafetensorError as exc:  # its I/O errors (a full disk) are OSErrors to every caller
                code = re.search(r"os error (\d+)", str(exc))
                raise OSError(int(code.group(1)) if code else None, f"cannot write {staged[0]}: {exc}") from exc
            meta = {"format": self.marker, "format_version": self.version, **meta,
                    self.checksum_key: file_sha256(staged[0]), "versions": library_versions(),
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            staged[1].write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n")
            os.replace(staged[0], tensors_path)
            os.replace(staged[1], meta_path)
        finally:
            for path in staged:
                path.unlink(missing_ok=True)
        return directory

    def read(self, directory: str | Path, keys: tuple[str, ...],
             optional: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """The checked metadata and the tensors ``keys`` of the artifact in ``directory`` (and those of
        ``optional`` that it holds)."""
        directory = Path(directory)
        meta_path, tensors_path = directory / self.metadata_file, directory / self.tensors_file
        for needed in (meta_path, tensors_path):
            if not needed.is_file():
                raise ModelLoadError(
                    f"{self.label} file {needed} is missing: pass the directory written by {self.written_by} "
                    f"(it holds {self.metadata_file} and {self.tensors_file})."
                )
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{self.label} metadata {meta_path} is not valid JSON ({exc}): {self.hint}.") from exc
        if not isinstance(meta, dict) or meta.get("format") != self.marker:
            raise ModelLoadError(f"{meta_path} is not {self.label} metadata (no 'format': '{self.marker}'): "
                                 f"{self.hint}.")
        if meta.get("format_version", 0) > self.version:
            raise ModelLoadError(
                f"{self.label} {directory} has format version {meta['format_version']}, newer than this "
                f"t2c-monitor reads ({self.version}): upgrade t2c-monitor."
            )
        if meta.get(self.checksum_key) != file_sha256(tensors_path):
            raise ModelLoadError(
                f"{self.label} tensors {tensors_path} do not match the checksum recorded in {meta_path} "
                f"(corrupt or replaced file): {self.hint}."
            )
        return meta, self._tensors(tensors_path, keys, optional)

    def _tensors(self, path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Tensor]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise ModelLoadError(f"{path} is not a readable safetensors file ({exc}): {self.hint}.") from exc
        missing = [k for k in keys if k not in tensors]
        if missing:
            raise ModelLoadError(f"{path} lacks tensors {missing} (it holds {sorted(tensors)}): {self.hint}.")
        return {k: tensors[k] for k in (*keys, *optional) if k in tensors}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str | None]:
    """Versions of Python and the libraries whose behaviour an artifact depends on (None when not installed)."""
    import platform

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in (("torch", "torch"), ("numpy", "numpy"), ("safetensors", "safetensors"), ("timm", "timm"),
                      ("open_clip", "open_clip_torch"), ("t2c_monitor", "t2c-monitor")):
        try:
            versions[key] = distributions.version(dist)
        except distributions.PackageNotFoundError:
            versions[key] = None
    if versions["t2c_monitor"] is None:
        from t2c_monitor import __version__

        versions["t2c_monitor"] = __version__
    return versions


def _json_default(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in artifact metadata")
