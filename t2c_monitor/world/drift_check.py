"""Does concept drift detection say the right thing in the shapes world?

``fit_world_aligner`` fits (and caches) the exact aligner from the world's shape-only source
encoder into its CLIP space; ``drift_semantics`` then plants each single shift at a realistic
strength, scores baseline and window images through the source encoder and aligner against the
world's default concept bank, runs the production KS audit (``drift.KSDriftDetector`` with its
default settings), and checks that the planted concept is flagged, ranked first and moves the
right way; it also runs audits of clean windows and counts their flags. Tests run it small on the
quick world; ``bench/world.py`` runs it larger on the full one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Planted shifts and the concept each should flag first, with its direction (+1 more, -1 less).
SHIFTS: dict[str, tuple[str, int]] = {
    "night=0.5": ("night", 1),
    "snow=0.5": ("snow", 1),
    "fog=0.5": ("fog", 1),
    "blur=0.5": ("blur", 1),
    "color=purple:0.4": ("purple", 1),
    "background=grass:0.5": ("grass", 1),
    "size=small:0.8": ("small", 1),
}


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


@dataclass
class ShiftCheck:
    shift: str
    concept: str
    flagged: bool
    rank: int | None
    top: str | None
    direction_ok: bool
    ks_stat: float

    @property
    def ok(self) -> bool:
        return self.flagged and self.rank == 1 and self.direction_ok


def drift_semantics(world: Any, aligner_dir: Path, *, n_ref: int = 2000, n_cur: int = 500, clean_audits: int = 20,
                    shifts: dict[str, tuple[str, int]] | None = None, seed: int = 7000) -> dict[str, Any]:
    """Plant each shift in a window of ``n_cur`` images, audit it against ``n_ref`` clean baseline
    images, and audit ``clean_audits`` clean windows; everything in aligned space (the source
    encoder through the aligner), as a monitor sees it."""
    import torch

    from t2c_monitor.aligner import Aligner
    from t2c_monitor.concepts import encode_bank, load_bank_definition
    from t2c_monitor.drift import KSDriftDetector, SortedReference
    from t2c_monitor.world.evaluate import default_bank_path
    from t2c_monitor.world.generate import generate

    shifts = shifts if shifts is not None else SHIFTS
    clip, source = world.clip_model(device="cpu"), world.source_encoder(device="cpu")
    aligner = Aligner.load(aligner_dir, expect_source=source.identity, expect_clip=clip.identity)
    bank = encode_bank(load_bank_definition(default_bank_path()), clip)
    vectors = torch.nn.functional.normalize(torch.as_tensor(bank.vectors, dtype=torch.float32), dim=1)

    def scores(n: int, seed: int, shift: str | None = None) -> np.ndarray:
        features = source.encode_images(generate(n, seed=seed, shift=shift).pil_images(), batch_size=256)
        aligned = torch.nn.functional.normalize(aligner.transform(features).float(), dim=1)
        return (aligned @ vectors.T).numpy()

    detector = KSDriftDetector()
    reference = SortedReference.from_scores(scores(n_ref, seed))
    checks = []
    for i, (spec, (concept, direction)) in enumerate(shifts.items()):
        result = detector.detect(reference, scores(n_cur, seed + 100 + i, spec), list(bank.concept_names))
        line = next(c for c in result.concepts if c.name == concept)
        checks.append(ShiftCheck(spec, concept, line.flagged, line.rank,
                                 result.flagged[0].name if result.flagged else None, line.direction == direction,
                                 float(line.ks_stat)))
    clean_flags = []
    for j in range(clean_audits):
        result = detector.detect(reference, scores(n_cur, seed + 1000 + j), list(bank.concept_names))
        clean_flags.append([c.name for c in result.flagged])
    return {
        "shifts": {c.shift: {"concept": c.concept, "flagged": c.flagged, "rank": c.rank, "top": c.top,
                             "direction_ok": c.direction_ok, "ks_stat": round(c.ks_stat, 4), "ok": c.ok}
                   for c in checks},
        "shifts_ok": sum(c.ok for c in checks), "shifts_total": len(checks),
        "clean_audits": clean_audits, "clean_flags": sum(len(f) for f in clean_flags),
        "clean_flagged_concepts": sorted({n for f in clean_flags for n in f}),
        "n_ref": n_ref, "n_cur": n_cur,
    }
