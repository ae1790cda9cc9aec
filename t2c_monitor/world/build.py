"""``t2c world build``: train the world's three models once and cache them.

The cache lives in ``get_settings().models_dir / "world-<key>"``; the key hashes the world code
version, the seed and the quick flag, so a world is rebuilt only when one of those changes. A
build trains into a temporary sibling directory and renames it into place at the end, under a
file lock: an interrupted build leaves no half-written world, and two processes never train the
same world twice.

Layout of a built world::

    world.json                        what was built, recipe, timings, training metrics
    clip/t2c-world-clip[-quick].json  open_clip model config
    clip/open_clip_model.safetensors  CLIP weights
    source/model.safetensors          timm t2c_world_resnet weights (shape classifier)
    source/source.json                architecture, classes, how to load
    caption_lm/                       GPT-2 + tokenizer (save_pretrained) and prefix.json
    captions.txt                      the captions the LM and the decoder learned from (a corpus)
    decoder/                          the prefix decoder (concept-to-text), ``PrefixDecoder.load``
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from t2c_monitor.errors import NotFittedError
from t2c_monitor.world.factors import EFFECTS, FACTORS

# Bump whenever the generator, the captions or the training recipe change: it is part of the
# cache key, so every cached world built by older code is rebuilt.
WORLD_CODE_VERSION = "9"
WORLD_FILE = "world.json"


@dataclass(frozen=True)
class Recipe:
    """How much data and training each model gets."""

    clip_images: int
    clip_steps: int
    clip_batch: int
    source_images: int
    source_steps: int
    lm_captions: int
    lm_steps: int
    prefix_steps: int = 1200  # the prefix decoder (concept-to-text), on the LM's captions
    focus_share: float = 0.5  # share of each CLIP batch captioned by focus captions
    focus_detail: float = 0.25  # chance a focus caption also names size, colour, background (each)
    focus_effect_only: float = 0.0  # chance an image with effects gets one effect's bare phrase instead


# Measured (seed 0, scratch runs of the bench's evaluation): the v5 recipe (360 CLIP steps of 256,
# 100 source steps) built in 220 s with R² 0.84 but CLIP shape 0.50 and blur AUROC 0.86. Shape is
# learned only after a plateau of a few hundred updates, by both models: the v5 source encoder
# itself classified shapes at 0.30, so once the CLIP learned shape (640 steps: 0.84) the source
# could not map it (R² 0.58). Now: 800 CLIP steps of 160 (more updates for a third more images),
# bare effect phrasings as 30% of an effected image's focus captions, a stronger blur (render.py),
# and 180 source steps. bench/world.py (aligner on 10,000 pairs; 4,000 overfit its 512x128 weights:
# R² 0.748): R² 0.77, CLIP shape 0.83, colour 0.92 (aligned 0.86x), every effect AUROC >= 0.978,
# build 313 s. More source steps trade aligned colour for R² (300: R² 0.80, colour 0.80x; 100:
# R² 0.69, colour 0.87x).
FULL = Recipe(clip_images=16000, clip_steps=800, clip_batch=160, source_images=8000, source_steps=180,
              lm_captions=16000, lm_steps=200, prefix_steps=1200, focus_detail=0.2, focus_effect_only=0.3)
QUICK = Recipe(clip_images=2000, clip_steps=120, clip_batch=64, source_images=1500, source_steps=30,
               lm_captions=2000, lm_steps=150, prefix_steps=300, focus_effect_only=0.3)


# The guided decoder on the world's caption LM. ZeroCap's defaults are for GPT-2's 50k tokens; with
# the world's ~500, its 512 CLIP-scored candidates are every token, and CLIP prefers noncommittal
# ones ("photo", "of"), so: a few candidates, a softer CLIP target, no opening words, no repeats,
# and CLIP's preference among the candidates added to each step's choice (clip_weight): the
# gradient steps alone barely steer so small an LM. Measured on the full world (40 held-out images,
# first value named, CLIP's image embedding / the aligned one): without clip_weight colour
# 0.35/0.38, background 0.55/0.55, class vectors 1 of 5; with it and 8 candidates colour 0.85/0.83,
# size 0.78/0.75, background 0.88/0.83, shape 0.70/0.50, class vectors 4 of 5.
GUIDED_SETTINGS = {"cond_text": "", "top_k": 8, "clip_loss_temperature": 0.05, "clip_weight": 1.0,
                   "forbidden_tokens": [" photo", " picture", " image"], "repetition_penalty": 2.0}


def recipe_for(quick: bool) -> Recipe:
    return QUICK if quick else FULL


def world_key(seed: int, quick: bool) -> str:
    """Cache key of a world: hash of the code version, seed and quick flag."""
    text = f"world-code={WORLD_CODE_VERSION}|seed={int(seed)}|quick={bool(quick)}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def world_dir(seed: int = 0, quick: bool = False, models_dir: str | Path | None = None) -> Path:
    """Where the world of ``(seed, quick)`` is (or will be) cached."""
    if models_dir is None:
        from t2c_monitor.settings import get_settings

        models_dir = get_settings().models_dir
    return Path(models_dir) / f"world-{world_key(seed, quick)}"


@dataclass(frozen=True)
class World:
    """A built world on disk: paths of its models and the specs the production loaders take."""

    root: Path
    metadata: dict[str, Any]

    @property
    def seed(self) -> int:
        return int(self.metadata["seed"])

    @property
    def quick(self) -> bool:
        return bool(self.metadata["quick"])

    @property
    def clip_config(self) -> Path:
        return self.root / self.metadata["files"]["clip_config"]

    @property
    def clip_weights(self) -> Path:
        return self.root / self.metadata["files"]["clip_weights"]

    @property
    def source_weights(self) -> Path:
        return self.root / self.metadata["files"]["source_weights"]

    @property
    def source_config(self) -> Path:
        return self.root / self.metadata["files"]["source_config"]

    @property
    def caption_lm_dir(self) -> Path:
        return self.root / self.metadata["files"]["caption_lm"]

    @property
    def corpus(self) -> Path:
        """The world's captions, one per line (what its LM and prefix decoder learned from)."""
        return self.root / self.metadata["files"]["corpus"]

    @property
    def prefix_decoder_dir(self) -> Path:
        return self.root / self.metadata["files"]["prefix_decoder"]

    def decode_section(self) -> dict[str, Any]:
        """A monitor's ``decode:`` section for this world: its corpus (so the vocabulary keeps only the
        words its CLIP learned), its prefix decoder, and its caption LM for the guided decoder with
        knobs for a 500-token LM (``GUIDED_SETTINGS``)."""
        return {"decoder": "vocab", "corpus": str(self.corpus), "prefix": str(self.prefix_decoder_dir),
                "lm": str(self.caption_lm_dir), "guided": dict(GUIDED_SETTINGS)}

    @property
    def clip_spec(self) -> str:
        """Spec for ``t2c_monitor.encoders.create_clip_model``."""
        return f"open_clip:{self.clip_config}@{self.clip_weights}"

    @property
    def source_spec(self) -> str:
        """Spec for ``create_source_encoder`` (import ``t2c_monitor.world.source_model`` first)."""
        from t2c_monitor.world.source_model import SOURCE_ARCH

        return f"timm:{SOURCE_ARCH}@{self.source_weights}"

    def clip_model(self, device=None):
        """The world CLIP through the production loader (``create_clip_model``)."""
        from t2c_monitor.encoders import create_clip_model

        return create_clip_model(self.clip_spec, device=device)

    def source_encoder(self, device=None):
        """The shape-only source encoder through the production loader (``create_source_encoder``)."""
        import t2c_monitor.world.source_model  # noqa: F401  (registers the timm architecture)
        from t2c_monitor.encoders import create_source_encoder

        return create_source_encoder(self.source_spec, device=device)

    def caption_lm(self):
        """``(model, tokenizer)`` of the caption LM through the transformers Auto classes."""
        from t2c_monitor.world.caption_lm import load_caption_lm

        return load_caption_lm(self.caption_lm_dir)


def load_world(seed: int = 0, quick: bool = False, models_dir: str | Path | None = None) -> World:
    """The cached world of ``(seed, quick)``; ``NotFittedError`` if it was never built."""
    root = world_dir(seed, quick, models_dir)
    meta_path = root / WORLD_FILE
    if not meta_path.is_file():
        flag = " --quick" if quick else ""
        raise NotFittedError(f"No shapes world built for seed {seed}{' (quick)' if quick else ''} in {root.parent}: "
                             f"run `t2c world build --seed {seed}{flag}` first.")
    return World(root=root, metadata=json.loads(meta_path.read_text()))


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_world(seed: int = 0, quick: bool = False, models_dir: str | Path | None = None, *,
                force: bool = False, progress: bool = True, threads: int | None = None) -> World:
    """Train (or reuse) the world of ``(seed, quick)`` and return it.

    Training uses ``threads`` torch threads (default: every core). On a machine shared with
    other busy processes, fewer threads than cores can be several times faster.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    from filelock import FileLock

    root = world_dir(seed, quick, models_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if (root / WORLD_FILE).is_file() and not force:
            return load_world(seed, quick, models_dir)
        staging = root.parent / f".{root.name}.building-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with _torch_threads(threads):
                _train_into(staging, seed, quick, progress)
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return load_world(seed, quick, models_dir)


def _train_into(out: Path, seed: int, quick: bool, progress: bool) -> None:
    import numpy as np
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from t2c_monitor.world.caption_lm import (
        LmTraining,
        save_caption_lm,
        train_caption_lm,
    )
    from t2c_monitor.world.captions import focus_caption
    from t2c_monitor.world.clip_train import (
        CLIP_MODEL_NAME,
        ClipTraining,
        clip_model_config,
        save_clip,
        train_clip,
    )
    from t2c_monitor.world.generate import generate
    from t2c_monitor.world.source_model import SourceTraining, save_source, train_source

    recipe = recipe_for(quick)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        def tracker(description: str, total: int):
            task = bar.add_task(description, total=total, loss=float("nan"))
            return lambda step, loss: bar.update(task, completed=step + 1, loss=loss)

        t0 = time.perf_counter()
        data = generate(recipe.clip_images, seed=seed * 7 + 1)
        clean = np.array([not scene.effects for scene in data.scenes])
        codes = np.array([scene.codes() for scene in data.scenes])
        focus_rng = np.random.default_rng(seed * 7 + 2)
        focus_texts, focus_codes = zip(*(focus_caption(scene, focus_rng, detail=recipe.focus_detail,
                                                       effect_only=recipe.focus_effect_only)
                                         for scene in data.scenes), strict=True)
        timings["generate"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        model_config = clip_model_config(quick)
        clip, clip_losses = train_clip(
            model_config, data.images, data.captions,
            ClipTraining(steps=recipe.clip_steps, batch_size=recipe.clip_batch, focus_share=recipe.focus_share),
            seed=seed, clean=clean,
            codes=codes, focus=(list(focus_texts), np.array(focus_codes)),
            progress=tracker("CLIP (images + captions)", recipe.clip_steps))
        name = CLIP_MODEL_NAME + ("-quick" if quick else "")
        clip_config, clip_weights = save_clip(clip, model_config, out / "clip", name)
        timings["clip"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        n = recipe.source_images
        source, source_losses = train_source(
            data.images[:n], data.labels("shape")[:n], SourceTraining(steps=recipe.source_steps, lr=3e-3), seed=seed,
            clean=clean[:n],
            progress=tracker("source encoder (shape labels only)", recipe.source_steps))
        source_weights, source_config = save_source(source, out / "source",
                                                    {"final_loss": float(np.mean(source_losses[-10:]))})
        timings["source"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        lm, tokenizer, lm_losses = train_caption_lm(
            data.captions[: recipe.lm_captions], LmTraining(steps=recipe.lm_steps), seed=seed,
            progress=tracker("caption LM", recipe.lm_steps))
        lm_dir = save_caption_lm(lm, tokenizer, out / "caption_lm", clip_dim=model_config["embed_dim"])
        timings["caption_lm"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        corpus = out / "captions.txt"
        corpus.write_text("\n".join(data.captions[: recipe.lm_captions]) + "\n")
        decoder_dir, prefix_losses = _train_prefix_decoder(
            out, clip_config, clip_weights, lm_dir, data.captions[: recipe.lm_captions], recipe.prefix_steps, seed,
            tracker("prefix decoder (text only)", recipe.prefix_steps))
        timings["prefix_decoder"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    metadata = {
        "world_code_version": WORLD_CODE_VERSION, "key": world_key(seed, quick), "seed": seed, "quick": quick,
        "factors": {k: list(v) for k, v in FACTORS.items()}, "effects": list(EFFECTS),
        "recipe": asdict(recipe), "build_seconds": timings,
        "final_losses": {"clip": float(np.mean(clip_losses[-10:])), "source": float(np.mean(source_losses[-10:])),
                         "caption_lm": float(np.mean(lm_losses[-10:])),
                         "prefix_decoder": float(np.mean(prefix_losses[-10:]))},
        "files": {"clip_config": str(clip_config.relative_to(out)), "clip_weights": str(clip_weights.relative_to(out)),
                  "source_weights": str(source_weights.relative_to(out)),
                  "source_config": str(source_config.relative_to(out)), "caption_lm": str(lm_dir.relative_to(out)),
                  "corpus": str(corpus.relative_to(out)), "prefix_decoder": str(decoder_dir.relative_to(out))},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / WORLD_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def _train_prefix_decoder(out: Path, clip_config: Path, clip_weights: Path, lm_dir: Path, captions: list[str],
                          steps: int, seed: int, progress) -> tuple[Path, list[float]]:
    """The world's prefix decoder, trained through the production loaders on the saved CLIP and LM."""
    from t2c_monitor.decode.lm import load_causal_lm
    from t2c_monitor.decode.prefix import PrefixTraining, train_prefix_decoder
    from t2c_monitor.encoders import create_clip_model

    clip = create_clip_model(f"open_clip:{clip_config}@{clip_weights}", device="cpu")
    losses: list[float] = []

    def step(i: int, loss: float) -> None:
        losses.append(loss)
        progress(i, loss)

    decoder = train_prefix_decoder(clip, load_causal_lm(lm_dir), captions, PrefixTraining(steps=steps, seed=seed),
                                   progress=step)
    return decoder.save(out / "decoder"), losses
