"""Does concept drift detection say the right thing in the shapes world?

``fit_world_aligner`` fits (and caches) the exact aligner from the world's shape-only source
encoder into its CLIP space; ``drift_semantics`` then plants shifts at realistic strengths, embeds
baseline and window images through the source encoder and aligner, scores them against the
world's default concept bank, and runs the production audit: KS per concept
(``drift.KSDriftDetector``) and its explanation (``drift.explain_shift``) with default settings.
Against the generator's ground truth it measures:

* **single shifts** (``SHIFTS``: every effect raised and lowered; a colour, background, size and
  shape forced on a share of images): is the planted concept flagged, and is it the first root,
  the right way? Which roots are the planted concept or another value of the factor it moved?
* **pairs** (``PAIRS``: two shifts at once whose concepts look alike): are both roots, and nothing
  else?
* **unlisted drift** (``UNLISTED``: an effect planted with its concept removed from the bank): does
  the audit report a shift the bank does not explain, and do the decoded words of the unexplained
  part name the effect in their top 3?
* **clean windows**: how many flags of any kind (concept or unlisted) do they raise?

Tests run it small on the quick world; ``bench/world.py`` runs it larger on the full one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Planted single shifts and the concept each should name first, with its direction (+1 more, -1 less).
SHIFTS: dict[str, tuple[str, int]] = {
    **{f"{effect}=0.5": (effect, 1) for effect in ("night", "snow", "fog", "blur")},
    **{f"{effect}=0": (effect, -1) for effect in ("night", "snow", "fog", "blur")},
    "color=purple:0.4": ("purple", 1),
    "color=red:0.4": ("red", 1),
    "color=white:0.4": ("white", 1),
    "color=black:0.4": ("black", 1),
    "background=grass:0.5": ("grass", 1),
    "background=sky:0.5": ("sky", 1),
    "background=sand:0.5": ("sand", 1),
    "size=small:0.8": ("small", 1),
    "size=large:0.8": ("large", 1),
    "shape=star:0.5": ("star", 1),
    "shape=circle:0.5": ("circle", 1),
}

# Two shifts at once whose concepts look alike: both must be roots, and nothing else.
PAIRS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "white objects + blur": (("color=white:0.4", "blur=0.5"), ("white", "blur")),
    "night + black objects": (("night=0.5", "color=black:0.4"), ("night", "black")),
    "fog + sky": (("fog=0.5", "background=sky:0.5"), ("fog", "sky")),
    "snow + white objects": (("snow=0.5", "color=white:0.4"), ("snow", "white")),
}

# Effects planted with their concept removed from the bank: the audit must say so, in words.
UNLISTED: tuple[str, ...] = ("night", "fog", "snow", "blur")


def fit_world_aligner(world: Any, out: Path, *, n_fit: int = 10_000, seed: int = 515151,
                      progress: bool = False) -> Path:
    """Fit the exact aligner source encoder -> CLIP on ``n_fit`` fresh world images and save it to
    ``out`` (reused when already there for this world)."""
    import json

    from t2c_monitor.aligner import fit_on_images
    from t2c_monitor.world.generate import generate

    marker = out / "world.json"
    key = {"world": world.root.name, "n_fit": n_fit, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == key:
        return out
    clip, source = world.clip_model(device="cpu"), world.source_encoder(device="cpu")
    aligner = fit_on_images(source, clip, generate(n_fit, seed=seed).pil_images(), ridge=1e-4, progress=progress)
    aligner.save(out)
    marker.write_text(json.dumps(key))
    return out


def factor_of(concept: str) -> str:
    """The factor a concept of the default bank is a value of (an effect is its own factor)."""
    from t2c_monitor.world.factors import EFFECTS, FACTORS

    for factor, values in FACTORS.items():
        if concept in values:
            return factor
    if concept in EFFECTS:
        return concept
    raise ValueError(f"{concept!r} is no value or effect of the shapes world")


@dataclass
class ShiftCheck:
    shift: str
    concept: str
    direction: int
    flagged: bool
    rank: int | None
    top: str | None
    direction_ok: bool
    ks_stat: float
    roots: list[tuple[str, int]]
    good_roots: int  # roots naming a factor the shift moved

    @property
    def first_root_ok(self) -> bool:
        return bool(self.roots) and self.roots[0] == (self.concept, self.direction)

    def to_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "flagged": self.flagged, "rank": self.rank, "top": self.top,
                "direction_ok": self.direction_ok, "ks_stat": round(self.ks_stat, 4),
                "roots": [("+" if d > 0 else "-") + n for n, d in self.roots], "first_root_ok": self.first_root_ok}


def drift_semantics(world: Any, aligner_dir: Path, *, n_ref: int = 2000, n_cur: int = 500, clean_audits: int = 20,
                    shifts: dict[str, tuple[str, int]] | None = None,
                    pairs: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None,
                    unlisted: tuple[str, ...] | None = None, seed: int = 7000) -> dict[str, Any]:
    """Plant each shift in a window of ``n_cur`` images, audit it against ``n_ref`` clean baseline
    images, and audit ``clean_audits`` clean windows; everything in aligned space (the source
    encoder through the aligner), as a monitor sees it (see the module doc for what is measured)."""
    import torch

    from t2c_monitor.aligner import Aligner
    from t2c_monitor.concepts import encode_bank, load_bank_definition
    from t2c_monitor.decode.factory import DecoderSettings, create_decoder
    from t2c_monitor.drift import KSDriftDetector, SortedReference, explain_shift
    from t2c_monitor.world.decode_check import value_words
    from t2c_monitor.world.evaluate import default_bank_path
    from t2c_monitor.world.generate import generate

    shifts = SHIFTS if shifts is None else shifts
    pairs = PAIRS if pairs is None else pairs
    unlisted = UNLISTED if unlisted is None else unlisted
    clip, source = world.clip_model(device="cpu"), world.source_encoder(device="cpu")
    aligner = Aligner.load(aligner_dir, expect_source=source.identity, expect_clip=clip.identity)
    definition = load_bank_definition(default_bank_path())
    bank = encode_bank(definition, clip)
    names = list(bank.concept_names)
    vectors = torch.nn.functional.normalize(torch.as_tensor(bank.vectors, dtype=torch.float32), dim=1).numpy()

    def embed(n: int, seed: int, shift: str | tuple[str, ...] | None = None) -> np.ndarray:
        features = source.encode_images(generate(n, seed=seed, shift=shift).pil_images(), batch_size=256)
        return torch.nn.functional.normalize(aligner.transform(features).float(), dim=1).numpy()

    detector = KSDriftDetector()
    ref_vectors = embed(n_ref, seed)
    reference = SortedReference.from_scores(ref_vectors @ vectors.T)

    def audit(window: np.ndarray, keep: list[int] | None = None):
        if keep is None:
            result = detector.detect(reference, window @ vectors.T, names)
            return result, explain_shift(ref_vectors, window, vectors, result)
        sub = vectors[keep]
        result = detector.detect(SortedReference.from_scores(ref_vectors @ sub.T), window @ sub.T,
                                 [names[i] for i in keep])
        return result, explain_shift(ref_vectors, window, sub, result)

    checks = []
    for i, (spec, (concept, direction)) in enumerate(shifts.items()):
        result, explanation = audit(embed(n_cur, seed + 100 + i, spec))
        line = next(c for c in result.concepts if c.name == concept)
        roots = [(r.name, r.direction) for r in explanation.roots]
        moved = {factor_of(concept)}
        checks.append(ShiftCheck(spec, concept, direction, line.flagged, line.rank,
                                 result.flagged[0].name if result.flagged else None, line.direction == direction,
                                 float(line.ks_stat), roots, sum(factor_of(n) in moved for n, _ in roots)))
    pair_results = {}
    for i, (label, (specs, concepts)) in enumerate(pairs.items()):
        _, explanation = audit(embed(n_cur, seed + 300 + i, specs))
        roots = [r.name for r in explanation.roots]
        moved = {factor_of(c) for c in concepts}
        pair_results[label] = {"roots": roots, "ok": set(roots) == set(concepts),
                               "good_roots": sum(factor_of(n) in moved for n in roots)}
    table = value_words()["effect"]
    unlisted_results = {}
    for i, effect in enumerate(unlisted):
        keep = [j for j, n in enumerate(names) if n != effect]
        window = embed(n_cur, seed + 500 + i, f"{effect}=0.5")
        result, explanation = audit(window, keep)
        decoder = create_decoder(DecoderSettings(kind="vocab", mode="sparse", top=3, corpus=world.corpus),
                                 clip=clip, bank=bank.without(effect))
        words = decoder.decode_direction(explanation.residual, space=clip.identity).grew.words(3)
        named = any(set(w.lower().split()) & (table[effect] | {effect}) for w in words)
        unlisted_results[effect] = {"unlisted": explanation.unlisted, "words": words, "named": named,
                                    "residual_share": round(explanation.residual_share, 3),
                                    "roots": [r.name for r in explanation.roots], "ok": explanation.unlisted and named}
    clean_flags = []
    for j in range(clean_audits):
        result, explanation = audit(embed(n_cur, seed + 1000 + j))
        clean_flags.append([c.name for c in result.flagged] + (["(unlisted)"] if explanation.unlisted else []))
    roots_total = sum(len(c.roots) for c in checks) + sum(len(p["roots"]) for p in pair_results.values())
    roots_good = sum(c.good_roots for c in checks) + sum(p["good_roots"] for p in pair_results.values())
    return {
        "shifts": {c.shift: c.to_dict() for c in checks},
        "shifts_total": len(checks),
        "shifts_flagged": sum(c.flagged and c.direction_ok for c in checks),
        "roots_first_ok": sum(c.first_root_ok for c in checks),
        "roots_precision": roots_good / roots_total if roots_total else None,
        "roots_total": roots_total,
        "pairs": pair_results, "pairs_ok": sum(p["ok"] for p in pair_results.values()), "pairs_total": len(pairs),
        "unlisted": unlisted_results, "unlisted_named": sum(u["ok"] for u in unlisted_results.values()),
        "unlisted_total": len(unlisted),
        "clean_audits": clean_audits, "clean_flags": sum(len(f) for f in clean_flags),
        "clean_flagged_concepts": sorted({n for f in clean_flags for n in f}),
        "n_ref": n_ref, "n_cur": n_cur,
    }
