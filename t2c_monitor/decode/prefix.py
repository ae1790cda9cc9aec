"""The ``prefix`` decoder: a CLIP vector becomes a few prefix embeddings, a causal LM writes the sentence.

Trained on text alone, as CapDec does: each caption of a corpus is embedded by the CLIP text tower,
normalised, and perturbed with Gaussian noise (so the mapping learns to read the neighbourhood of a
text embedding, which is where image embeddings of the same content fall across CLIP's modality
gap); a small MLP maps the noisy vector to ``prefix_length`` embeddings of the LM's width, and the
LM is trained (with the MLP, or frozen) to write the caption after them. Decoding is one forward
pass per token (beam search through ``transformers``' ``generate`` on ``inputs_embeds``).

Both sides are centred as SpLiCE does: the network reads unit vectors minus their modality's mean,
normalised (the corpus's text mean in training; at decoding the image side's mean when it is known,
a monitor's baseline or the images being decoded, else the text mean). Centring removes most of the
gap (image and text embeddings sit in two cones around different means) and spreads the inputs of
a small CLIP, whose raw embeddings of different captions can share a cosine near 1.

Saved as a directory: ``prefix.json`` (format, CLIP and LM identities, recipe), ``mapper.safetensors``
(the MLP and the text mean) and ``lm/`` (the LM and tokenizer, ``save_pretrained``), so the LM loads
with ``AutoModelForCausalLM`` and the rest with ``safetensors``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2c_monitor.artifacts import ArtifactFormat
from t2c_monitor.decode.base import Decoded, as_rows, check_space
from t2c_monitor.decode.lm import CausalLM, identity_of, load_causal_lm
from t2c_monitor.errors import ModelLoadError, SpaceMismatchError
from t2c_monitor.identity import ModelIdentity, as_dict, as_identity, describe, same_space

PREFIX_FORMAT = ArtifactFormat(
    label="prefix decoder", marker="t2c-prefix-decoder", version=1, metadata_file="prefix.json",
    tensors_file="mapper.safetensors", checksum_key="mapper_sha256", written_by="`t2c decoder train`",
    hint="train it again with `t2c decoder train --clip SPEC --lm SPEC --corpus FILE --out DIR`",
)
LM_DIR = "lm"


@dataclass(frozen=True)
class PrefixTraining:
    """How a prefix decoder is trained.

    ``noise_norm`` is the expected length of the Gaussian noise added to each (centred, unit) text
    embedding: per dimension its standard deviation is ``noise_norm / sqrt(dim)``, so one setting
    means the same for CLIP models of any width. CapDec's variance of 0.016 per dimension on
    ViT-B/32 (512-d) is a norm of about 2.9 on uncentred vectors. The decoder cannot know how far
    image vectors (or aligned ones, which carry the aligner's error too) will fall from the texts,
    so by default each caption draws its noise norm uniformly from ``noise_norm`` to
    ``noise_norm_max``. On the shapes world's centred 128-d vectors (500 held-out images, share of
    sentences naming colour / size / background, from CLIP's image embedding and the aligned one):
    a fixed 0.5 gave 0.87/0.95/0.95 and 0.74/0.87/0.92 (colour 0.85x); 0.75 gave 0.89/0.95/0.97 and
    0.76/0.86/0.95; 1.0 lost size; 0.25 to 1.0 gave 0.88/0.95/0.96 and 0.77/0.88/0.95 (colour 0.88x).
    """

    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3  # the mapping network
    lm_lr: float = 5e-4  # the LM, when ``train_lm``
    prefix_length: int = 4
    noise_norm: float = 0.25
    noise_norm_max: float | None = 1.0  # when set, each caption's noise norm is uniform in [noise_norm, this]
    train_lm: bool = True
    max_text_tokens: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "prefix_length", "max_text_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "lm_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.noise_norm >= 0:
            raise ValueError(f"noise_norm must be >= 0, got {self.noise_norm}")
        if self.noise_norm_max is not None and not self.noise_norm_max >= self.noise_norm:
            raise ValueError(f"noise_norm_max must be >= noise_norm ({self.noise_norm}), got {self.noise_norm_max}")


class PrefixMapper(nn.Module):
    """Centred CLIP vector ``(n, clip_dim)`` -> prefix embeddings ``(n, prefix_length, width)`` (ClipCap's MLP)."""

    def __init__(self, clip_dim: int, width: int, prefix_length: int) -> None:
        super().__init__()
        self.clip_dim, self.width, self.prefix_length = clip_dim, width, prefix_length
        hidden = max(width * prefix_length // 2, clip_dim)
        self.net = nn.Sequential(nn.Linear(clip_dim, hidden), nn.Tanh(), nn.Linear(hidden, width * prefix_length))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(x.shape[0], self.prefix_length, self.width)


class PrefixDecoder:
    """Sentences for vectors of one CLIP space: mapping network + causal LM (see the module docstring)."""

    name = "prefix"

    def __init__(self, mapper: PrefixMapper, lm: CausalLM, clip: ModelIdentity, text_mean: Tensor, *,
                 image_mean: Tensor | np.ndarray | None = None, beam_size: int = 3, max_tokens: int = 24,
                 recipe: dict | None = None) -> None:
        if beam_size < 1 or max_tokens < 1:
            raise ValueError(f"beam_size and max_tokens must be >= 1, got {beam_size} and {max_tokens}")
        if mapper.width != lm.width:
            raise SpaceMismatchError(f"the mapping network writes {mapper.width}-wide prefixes but the LM "
                                     f"{describe(lm.identity)} embeds tokens {lm.width} wide")
        self.mapper, self.lm, self._clip = mapper.eval(), lm, clip
        self.text_mean = torch.as_tensor(text_mean, dtype=torch.float32)
        self.image_mean = None if image_mean is None else torch.as_tensor(image_mean, dtype=torch.float32)
        for label, mean in (("text_mean", self.text_mean), ("image_mean", self.image_mean)):
            if mean is not None and mean.shape != (mapper.clip_dim,):
                raise ValueError(f"{label} must have shape ({mapper.clip_dim},), got {tuple(mean.shape)}")
        self.beam_size, self.max_tokens = beam_size, max_tokens
        self.recipe = recipe or {}

    @property
    def clip(self) -> ModelIdentity:
        return self._clip

    def with_image_mean(self, image_mean: Tensor | np.ndarray | None) -> PrefixDecoder:
        return self.with_options(image_mean=image_mean)

    def with_options(self, **options) -> PrefixDecoder:
        """The same decoder with other decoding options (``image_mean``, ``beam_size``, ``max_tokens``)."""
        current = {"image_mean": self.image_mean, "beam_size": self.beam_size, "max_tokens": self.max_tokens}
        unknown = set(options) - set(current)
        if unknown:
            raise ValueError(f"unknown prefix decoder options {sorted(unknown)} (known: {sorted(current)})")
        return PrefixDecoder(self.mapper, self.lm, self._clip, self.text_mean, recipe=self.recipe,
                             **{**current, **options})

    def decode(self, vectors: Tensor | np.ndarray, *, space: ModelIdentity | dict | None,
               batch_size: int = 64) -> list[Decoded]:
        """Each row of ``vectors`` as ``beam_size`` sentences ranked by mean token log-probability."""
        check_space(self._clip, space, built="this prefix decoder was trained for")
        rows = self._centred(F.normalize(as_rows(vectors, self.mapper.clip_dim), dim=1))
        out: list[Decoded] = []
        for start in range(0, rows.shape[0], batch_size):
            out.extend(self._generate(rows[start : start + batch_size]))
        return out

    def _centred(self, rows: Tensor) -> Tensor:
        """Unit vectors centred by their side's mean and normalised: what the mapping network reads."""
        mean = self.image_mean if self.image_mean is not None else self.text_mean
        return F.normalize(rows - mean, dim=1)

    def _start_embeddings(self, rows: Tensor) -> Tensor:
        device = self.lm.device
        with torch.inference_mode():
            prefix = self.mapper.to(device)(rows.to(device))
            start = torch.full((rows.shape[0], 1), self.lm.start_token_id, dtype=torch.long, device=device)
            return torch.cat([prefix, self.lm.model.get_input_embeddings()(start)], dim=1)

    def _generate(self, rows: Tensor) -> list[Decoded]:
        embeds = self._start_embeddings(rows)
        n, beams = rows.shape[0], self.beam_size
        with torch.inference_mode():
            out = self.lm.model.generate(
                inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long,
                                                                device=embeds.device),
                max_new_tokens=self.max_tokens, num_beams=beams, num_return_sequences=beams, do_sample=False,
                eos_token_id=self.lm.end_token_id, pad_token_id=self.lm.tokenizer.pad_token_id
                if self.lm.tokenizer.pad_token_id is not None else self.lm.end_token_id,
                output_scores=True, return_dict_in_generate=True)
        if beams > 1:
            scores = out.sequences_scores.float().cpu()
        else:
            steps = self.lm.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            counted = torch.isfinite(steps) & (steps != 0)
            scores = (steps.where(counted, 0).sum(1) / counted.sum(1).clamp(min=1)).float().cpu()
        texts = [self.lm.decode(seq.tolist()) for seq in out.sequences]
        decoded = []
        for i in range(n):
            ranked = sorted(((texts[i * beams + b], float(scores[i * beams + b])) for b in range(beams)),
                            key=lambda pair: -pair[1])
            decoded.append(Decoded(_unique(ranked)))
        return decoded

    def save(self, directory: str | Path) -> Path:
        """Write ``prefix.json``, ``mapper.safetensors`` and ``lm/`` to ``directory``."""
        directory = Path(directory)
        self.lm.model.save_pretrained(directory / LM_DIR)
        self.lm.tokenizer.save_pretrained(directory / LM_DIR)
        tensors = {f"mapper.{k}": v.detach().cpu() for k, v in self.mapper.state_dict().items()}
        tensors["text_mean"] = self.text_mean
        return PREFIX_FORMAT.write(directory, tensors, {
            "clip": as_dict(self._clip), "lm": as_dict(self.lm.identity), "clip_dim": self.mapper.clip_dim,
            "width": self.mapper.width, "prefix_length": self.mapper.prefix_length, "recipe": self.recipe,
            "beam_size": self.beam_size, "max_tokens": self.max_tokens,
        })

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device | None = None) -> PrefixDecoder:
        """A decoder saved by ``save``; its LM must be the one recorded (the weights hash is checked)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta, tensors = PREFIX_FORMAT.read(directory, ("text_mean",))
        lm = load_causal_lm(directory / LM_DIR, device=device)
        if not same_space(lm.identity, meta["lm"]):
            raise ModelLoadError(f"The language model in {directory / LM_DIR} is not the one this decoder was trained "
                                 f"with ({describe(meta['lm'])}): {PREFIX_FORMAT.hint}.")
        mapper = PrefixMapper(int(meta["clip_dim"]), int(meta["width"]), int(meta["prefix_length"]))
        state = {k.removeprefix("mapper."): v for k, v in load_file(str(directory / PREFIX_FORMAT.tensors_file)).items()
                 if k.startswith("mapper.")}
        mapper.load_state_dict(state)
        return cls(mapper.to(lm.device), lm, as_identity(meta["clip"]), tensors["text_mean"],
                   beam_size=int(meta.get("beam_size", 3)), max_tokens=int(meta.get("max_tokens", 24)),
                   recipe=meta.get("recipe", {}))


def _unique(ranked: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Ranked texts with repeats (beams that differ only in tokens that decode alike) removed."""
    seen: set[str] = set()
    out = []
    for text, score in ranked:
        if text not in seen:
            seen.add(text)
            out.append((text, score))
    return out


def train_prefix_decoder(clip, lm: CausalLM, corpus: Sequence[str], training: PrefixTraining = PrefixTraining(),
                         progress: Callable[[int, float], None] | None = None) -> PrefixDecoder:
    """Train a prefix decoder for ``clip`` (an ``encoders.ClipModel``) and ``lm`` on ``corpus`` (captions).

    Text only: the centred CLIP text embeddings of the captions, with Gaussian noise (``noise_norm``), are
    the inputs; the captions are the targets. ``progress(step, loss)`` is called after each step.
    """
    texts = [t.strip() for t in corpus if t and t.strip()]
    if len(texts) < 2:
        raise ValueError(f"corpus must hold at least 2 non-empty captions, got {len(texts)}")
    torch.manual_seed(training.seed)
    generator = torch.Generator().manual_seed(training.seed)
    embeddings = F.normalize(clip.encode_text(texts), dim=1)
    text_mean = embeddings.mean(dim=0)
    embeddings = F.normalize(embeddings - text_mean, dim=1)  # the mapping network reads centred vectors
    noise_std = training.noise_norm / math.sqrt(embeddings.shape[1])
    tokens = [[lm.start_token_id, *lm.encode(t)[: training.max_text_tokens], lm.end_token_id] for t in texts]
    mapper = PrefixMapper(int(embeddings.shape[1]), lm.width, training.prefix_length).to(lm.device)
    model = copy.deepcopy(lm.model) if training.train_lm else lm.model  # the caller's LM stays as it was
    groups = [{"params": mapper.parameters(), "lr": training.lr}]
    if training.train_lm:
        groups.append({"params": model.parameters(), "lr": training.lm_lr})
    else:
        model.requires_grad_(False)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    mapper.train()
    model.train(training.train_lm)
    try:
        for step in range(training.steps):
            index = torch.randint(0, len(texts), (training.batch_size,), generator=generator)
            x = embeddings[index]
            scale = torch.full((x.shape[0], 1), noise_std)
            if training.noise_norm_max is not None:
                high = training.noise_norm_max / math.sqrt(x.shape[1])
                scale = noise_std + (high - noise_std) * torch.rand((x.shape[0], 1), generator=generator)
            x = x + scale * torch.randn(x.shape, generator=generator)
            loss = _caption_loss(mapper, model, x, [tokens[i] for i in index.tolist()])
            warm = min(1.0, (step + 1) / max(1, training.steps // 20))
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * warm * 0.5 * (1.0 + math.cos(math.pi * step / training.steps))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress(step, float(loss.item()))
    finally:
        model.requires_grad_(True)
        model.eval()
        mapper.eval()
    if not training.train_lm:
        return PrefixDecoder(mapper, lm, clip.identity, text_mean,
                             recipe={**asdict(training), "corpus_size": len(texts), "base_lm": as_dict(lm.identity)})
    trained_lm = CausalLM(model=model, tokenizer=lm.tokenizer,
                          identity=identity_of(model, f"{lm.identity.name}+prefix", lm.identity.weights))
    return PrefixDecoder(mapper, trained_lm, clip.identity, text_mean,
                         recipe={**asdict(training), "corpus_size": len(texts), "base_lm": as_dict(lm.identity)})


def _caption_loss(mapper: PrefixMapper, model: nn.Module, x: Tensor, batch: list[list[int]]) -> Tensor:
    """LM loss of ``model`` writing each caption (and its end token) after its prefix."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    ids, mask = ids.to(device), mask.to(device)
    prefix = mapper(x.to(device))
    embeds = torch.cat([prefix, model.get_input_embeddings()(ids)], dim=1)
    ignore = torch.full((len(batch), prefix.shape[1]), -100, dtype=torch.long, device=device)
    labels = torch.cat([ignore, ids.masked_fill(mask == 0, -100)], dim=1)
    labels[:, prefix.shape[1]] = -100  # the start token is given, not predicted
    attention = torch.cat([torch.ones_like(ignore), mask], dim=1)
    return model(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss


__all__ = ["PREFIX_FORMAT", "PrefixDecoder", "PrefixMapper", "PrefixTraining", "train_prefix_decoder"]


@dataclass(frozen=True)
class TrainedDecoder:
    """What ``t2c decoder train`` reports."""

    out: str
    clip: dict
    lm: dict
    captions: int
    steps: int
    final_loss: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def read_corpus(path: str | Path) -> list[str]:
    """Captions of a corpus file, one per non-empty line."""
    from t2c_monitor.errors import ConfigError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the caption corpus {path} ({exc}): give a UTF-8 text file, one caption per "
                          "line.") from exc
    captions = [line.strip() for line in lines if line.strip()]
    if len(captions) < 2:
        raise ConfigError(f"The caption corpus {path} holds {len(captions)} captions: a decoder needs many (one per "
                          "line; thousands for a useful one).")
    return captions


def train_decoder(clip_spec: str, lm_spec: str, corpus: str | Path, out: str | Path,
                  training: PrefixTraining = PrefixTraining(), *, device: str | None = None,
                  progress: bool = False) -> TrainedDecoder:
    """The use case of ``t2c decoder train``: a prefix decoder for the CLIP of ``clip_spec`` and the LM of
    ``lm_spec`` trained on the captions of ``corpus`` and saved to ``out``."""
    import time

    from t2c_monitor.encoders import create_clip_model
    from t2c_monitor.progress import progress_bar

    started = time.perf_counter()
    captions = read_corpus(corpus)
    clip = create_clip_model(clip_spec, device=device)
    lm = load_causal_lm(lm_spec, device=clip.device)
    losses: list[float] = []
    with progress_bar("training the prefix decoder", training.steps, progress) as advance:
        def step(_: int, loss: float) -> None:
            losses.append(loss)
            advance(1)

        decoder = train_prefix_decoder(clip, lm, captions, training, progress=step)
    decoder.save(out)
    tail = losses[-20:]
    return TrainedDecoder(out=str(Path(out).resolve()), clip=as_dict(decoder.clip), lm=as_dict(decoder.lm.identity),
                          captions=len(captions), steps=training.steps, final_loss=float(sum(tail) / len(tail)),
                          seconds=time.perf_counter() - started)
