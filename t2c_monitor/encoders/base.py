"""What every model kind shares: the encoder objects, batching, the weights hash, seeded init.

Every model reports its output width ``dim`` and a ``ModelIdentity`` whose ``weights_sha256`` is
a hash of the loaded state dict (``state_dict_sha256``), so the same weights are recognised
whatever file they came from. Encoding runs batched under ``torch.inference_mode`` on the
configured device, with bf16 autocast and channels-last memory for convolutional towers on CUDA.

``SourceEncoder`` (timm) and ``ClipModel`` (open_clip) share that image API through
``_ImageTower``; the kind modules only build the torch model, its preprocessing and its identity.
The loading helpers both kinds use (local weights files, seeded random init) live here too.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from t2c_monitor.device import autocast, use_channels_last
from t2c_monitor.errors import ModelLoadError
from t2c_monitor.identity import ModelIdentity

RANDOM_INIT_SEED = 0


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over sorted parameter/buffer names, dtypes, shapes and bytes: stable across save/load."""
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def batch_starts(n: int, batch_size: int, description: str, progress: bool) -> Iterator[int]:
    """Start offsets of batches, with a progress bar on stderr when asked for."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, n, batch_size)
    if not progress:
        yield from starts
        return
    from t2c_monitor.progress import progress_bar

    with progress_bar(description, len(starts), True) as advance:
        for start in starts:
            yield start
            advance(1)


class _ImageTower:
    """Shared image API of source encoders and CLIP models: preprocess, then encode in batches."""

    identity: ModelIdentity
    device: torch.device
    preprocess: Callable[[Image.Image], torch.Tensor]

    def __init__(self, model: nn.Module, identity: ModelIdentity, preprocess: Callable, device: torch.device):
        self.model = model.eval().to(device)
        self.identity = identity
        self.preprocess = preprocess
        self.device = device
        self._channels_last = use_channels_last(device, self._image_module())
        if self._channels_last:
            self._image_module().to(memory_format=torch.channels_last)

    @property
    def dim(self) -> int:
        return self.identity.dim

    def _image_module(self) -> nn.Module:
        return self.model

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels ``(n, 3, H, W)`` -> embeddings ``(n, dim)`` float32 on CPU."""
        if pixels.ndim != 4:
            raise ValueError(f"pixels must be (n, 3, H, W), got shape {tuple(pixels.shape)}")
        x = pixels.to(self.device, non_blocking=True)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device):
            out = self._forward_images(x)
        return out.float().cpu()

    def encode_images(
        self, images: Sequence[Image.Image], batch_size: int = 64, progress: bool = False
    ) -> torch.Tensor:
        """PIL images -> embeddings ``(n, dim)``, preprocessed with this model's own transform."""
        out = torch.empty((len(images), self.dim), dtype=torch.float32)
        for start in batch_starts(len(images), batch_size, f"encoding images ({self.identity.name})", progress):
            chunk = images[start : start + batch_size]
            out[start : start + len(chunk)] = self.encode(torch.stack([self.preprocess(im) for im in chunk]))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity}, device={self.device})"


@dataclass(frozen=True)
class ClassHead:
    """A classifier's rows ``(classes, dim)`` in feature space, its bias, and its class names."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    labels: tuple[str, ...]


class SourceEncoder(_ImageTower):
    """A timm model used as a feature extractor: pooled pre-logits features.

    ``data_config`` is the model's resolved timm data config (input size, mean, std, crop),
    the one ``preprocess`` was built from. ``class_head`` keeps the classifier the loader took off
    (weights from a file or the hub), for decoding class vectors; None for a random-init model.
    """

    def __init__(
        self, model: nn.Module, identity: ModelIdentity, preprocess: Callable, device: torch.device, data_config: dict,
        class_head: ClassHead | None = None,
    ):
        super().__init__(model, identity, preprocess, device)
        self.data_config = data_config
        self.class_head = class_head

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True)


class ClipModel(_ImageTower):
    """An open_clip model: the image tower (same API as ``SourceEncoder``) and the text tower."""

    def __init__(
        self, model: nn.Module, identity: ModelIdentity, preprocess: Callable, device: torch.device, tokenizer: Callable
    ):
        super().__init__(model, identity, preprocess, device)
        self.tokenizer = tokenizer

    def _image_module(self) -> nn.Module:
        return self.model.visual

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels, normalize=False)

    @property
    def context_length(self) -> int:
        """Most tokens (start and end tokens included) one text may have before it is truncated."""
        return int(self.tokenizer.context_length)

    def count_tokens(self, text: str) -> int:
        """Tokens this model's tokenizer makes of ``text``, start and end tokens included."""
        tok = self.tokenizer
        if hasattr(tok, "sot_token_id") and hasattr(tok, "encode"):  # open_clip's SimpleTokenizer
            return len(tok.encode(text)) + 2
        if hasattr(tok, "tokenizer"):  # HFTokenizer wrapping a transformers tokenizer
            return len(tok.tokenizer(tok.clean_fn(text))["input_ids"])
        raise ModelLoadError(f"Cannot count tokens with tokenizer {type(tok).__name__} of {self.identity.name}.")

    def encode_text(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """Texts -> text embeddings ``(n, dim)`` float32 on CPU, NOT normalised."""
        texts = list(texts)
        out = torch.empty((len(texts), self.dim), dtype=torch.float32)
        for start in batch_starts(len(texts), batch_size, f"encoding texts ({self.identity.name})", progress):
            chunk = texts[start : start + batch_size]
            tokens = self.tokenizer(chunk).to(self.device)
            with torch.inference_mode(), autocast(self.device):
                out[start : start + len(chunk)] = self.model.encode_text(tokens, normalize=False).float().cpu()
        return out


# ----------------------------------------------------------------------------------------------
# loading helpers shared by both kinds


LOAD_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError,
                                                AttributeError, EOFError, pickle.UnpicklingError)
"""What loading a weights file that is not one (a text file, a truncated or foreign checkpoint) raises."""


def local_weights_file(path: str, what: str) -> Path:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ModelLoadError(
            f"Weights file {path!r} for {what} does not exist: give the path of a "
            ".safetensors file or a torch checkpoint (or a hub tag)."
        )
    return resolved


@contextmanager
def seeded_init() -> Iterator[None]:
    """Fixed RNG for random initialisation, without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        yield
