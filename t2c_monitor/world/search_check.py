"""Do concept-logic search and concept bottleneck models say true things in the shapes world?

* ``logic_semantics``: concept-logic queries (``QUERIES``: several constraints each, one with a
  negation, one with free text) run through ``search.use_cases.concept_search`` over an ingested
  world batch, the production path: the monitor's stored aligned vectors in PostgreSQL. Every
  image was ingested from the generator's manifest, so its true factors are stored with it; a hit
  is right when the factors satisfy the query's meaning (``QUERIES``' predicates). Reported per
  query: the precision of the hits returned (``top``), of everything matched, and the counts.
* ``cbm_semantics``: a concept bottleneck model over the world's default bank, fitted on fresh
  images' aligned vectors to predict shape, against a linear probe on the source features; and
  the explanation of a misclassified image.
* ``world_monitor``: a database monitor for the world (its source encoder, CLIP, an aligner and a
  bank) with one ingested batch, for the first check.

``bench/world.py`` runs them on the full world; the tests run them small on the quick world.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Truth = Callable[[dict[str, Any]], bool]


def _true(meta: dict[str, Any], key: str) -> bool:
    value = meta.get(key)
    return value is True or str(value).lower() == "true"


# name -> (constraints, what a right hit is, by the manifest's factors)
QUERIES: dict[str, tuple[list[str], Truth]] = {
    "red objects at night": (["night:+1.5", "red:+1.5"], lambda m: _true(m, "night") and m["color"] == "red"),
    "blue on sand, no fog": (["blue:+1.5", "sand:+1.5", "fog:-0"],
                             lambda m: m["color"] == "blue" and m["background"] == "sand" and not _true(m, "fog")),
    "snowy sky": (["snow:+1.5", "sky:+1.5"], lambda m: _true(m, "snow") and m["background"] == "sky"),
    "small yellow, not blurred": (["small:+1", "yellow:+1.5", "blur:-0.5"],
                                  lambda m: m["size"] == "small" and m["color"] == "yellow" and not _true(m, "blur")),
    "free text: a large white circle, not at night": (
        ["text:a large white circle:+1.5", "night:-0"],
        lambda m: m["color"] == "white" and m["size"] == "large" and not _true(m, "night")),
    "purple in the sky": (["purple:+1.5", "sky:+1.5"], lambda m: m["color"] == "purple" and m["background"] == "sky"),
    "large black, no fog": (["large:+1.5", "black:+1.5", "fog:-0"],
                            lambda m: m["size"] == "large" and m["color"] == "black" and not _true(m, "fog")),
    "white on brick, no night": (["white:+1.5", "brick:+1.5", "night:-0"],
                                 lambda m: m["color"] == "white" and m["background"] == "brick"
                                 and not _true(m, "night")),
}


def logic_semantics(db: Any, monitor: str, *, batches: list[str] | None = None, top: int = 20,
                    queries: dict[str, tuple[list[str], Truth]] | None = None, clip: Any = None) -> dict[str, Any]:
    """Each query's precision against the stored true factors (see the module doc)."""
    from t2c_monitor.search.query import parse_constraints
    from t2c_monitor.search.use_cases import concept_search

    out: dict[str, Any] = {}
    for name, (constraints, truth) in (queries or QUERIES).items():
        shown = concept_search(db, monitor, parse_constraints(constraints), limit=top, batches=batches or (),
                               clip=clip)
        everything = concept_search(db, monitor, parse_constraints(constraints), limit=max(shown.n_matched, 1),
                                    batches=batches or (), clip=clip)
        right = [truth(h.meta) for h in shown.hits]
        right_all = [truth(h.meta) for h in everything.hits]
        out[name] = {"constraints": constraints, "counts": shown.counts, "returned": len(right),
                     "precision": sum(right) / len(right) if right else 0.0,
                     "precision_all_matched": sum(right_all) / len(right_all) if right_all else 0.0,
                     "ms": round(shown.seconds * 1000, 1)}
    return out


def pair_semantics(db: Any, monitor: str, *, k: float = 1.5, top: int = 20,
                   factors: tuple[str, ...] = ("color", "size", "background", "snow", "night", "blur", "fog")
                   ) -> dict[str, Any]:
    """Beyond the listed queries: every pair of bank concepts of two different factors (``X:+k Y:+k``), its
    top hits' precision (both true). Shapes are left out: the world's shape-only source encoder maps
    shape into CLIP space too weakly for any concept search (aligned zero-shot shape 0.49)."""
    import numpy as np

    from t2c_monitor.search.query import Constraint
    from t2c_monitor.search.use_cases import concept_search
    from t2c_monitor.store.monitors import get_monitor
    from t2c_monitor.world.drift_check import factor_of

    with db.session() as session:
        names = [n for n in get_monitor(session, monitor).concept_names if factor_of(n) in factors]
    precisions, empty = [], 0
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if factor_of(a) == factor_of(b):
                continue
            found = concept_search(db, monitor, [Constraint(a, k, "+"), Constraint(b, k, "+")], limit=top)
            if not found.hits:
                empty += 1
                continue
            right = [_concept_true(h.meta, a) and _concept_true(h.meta, b) for h in found.hits]
            precisions.append(sum(right) / len(right))
    values = np.array(precisions)
    return {"pairs": len(values), "empty": empty, "k": k, "mean_precision": round(float(values.mean()), 4),
            "share_at_least_0_9": round(float((values >= 0.9).mean()), 4),
            "median_precision": round(float(np.median(values)), 4)}


def _concept_true(meta: dict[str, Any], concept: str) -> bool:
    from t2c_monitor.world.drift_check import factor_of

    factor = factor_of(concept)
    return _true(meta, concept) if factor == concept else meta.get(factor) == concept


def world_monitor(db: Any, world: Any, aligner_dir: Path, out_dir: Path, *, n: int, seed: int,
                  name: str = "world", batch: str = "world-batch", progress: bool = False) -> str:
    """Apply a monitor of ``world`` (default bank) to ``db`` and ingest ``n`` fresh images from their
    manifest (so their true factors are stored with them); returns the monitor's name."""
    import yaml

    from t2c_monitor.apply import apply_monitor
    from t2c_monitor.ingest import ingest
    from t2c_monitor.monitors import load_monitor_file
    from t2c_monitor.world.evaluate import default_bank_path
    from t2c_monitor.world.generate import write_images

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "monitors.yaml"
    path.write_text(yaml.safe_dump({"monitors": [{
        "name": name, "encoder": world.source_spec, "clip": world.clip_spec, "aligner": str(aligner_dir),
        "bank": str(default_bank_path()), "ingest": {"batch_size": 128, "chunk_size": 512},
        "audit": {"evidently": False}}]}))
    (config,) = load_monitor_file(path)
    apply_monitor(db, config)
    manifest = write_images(out_dir / batch, n, seed=seed, progress=progress)
    ingest(db, name, manifest, batch_id=batch, progress=progress)
    return name


def cbm_semantics(world: Any, aligner_dir: Path, *, n: int = 3000, seed: int = 4242) -> dict[str, Any]:
    """A shape CBM on the default bank against a linear probe on the source features (see the module doc)."""
    from types import SimpleNamespace

    from t2c_monitor.aligner import Aligner
    from t2c_monitor.cbm.data import Embedded
    from t2c_monitor.cbm.use_cases import BankConcepts, explain_vectors, fit_from_embedded
    from t2c_monitor.concepts import encode_bank, load_bank_definition
    from t2c_monitor.world.evaluate import default_bank_path
    from t2c_monitor.world.generate import generate

    clip, source = world.clip_model(device="cpu"), world.source_encoder(device="cpu")
    aligner = Aligner.load(aligner_dir, expect_source=source.identity, expect_clip=clip.identity)
    bank = encode_bank(load_bank_definition(default_bank_path()), clip)
    images = generate(n, seed=seed)
    features = source.encode_images(images.pil_images())
    labels = [scene.shape for scene in images.scenes]
    data = Embedded([f"image-{i}" for i in range(n)], list(labels), features, aligner.transform(features), [])
    concepts = BankConcepts(tuple(bank.concept_names), bank.vectors.numpy(), {"name": bank.name,
                                                                              "version": bank.version})
    model, report = fit_from_embedded(data, concepts, SimpleNamespace(encoder=source, clip=clip, aligner=aligner),
                                      label_key="shape", seed=seed)
    wrong = [i for i in range(n) if model.classes[int(model.predict(data.aligned[i:i + 1])[0])] != labels[i]]
    explained = explain_vectors(model, data.aligned[wrong[:1]], [data.uris[i] for i in wrong[:1]],
                                [labels[i] for i in wrong[:1]])
    return {"accuracy": round(report.accuracy, 4), "probe_accuracy": round(report.probe_accuracy, 4),
            "ratio": round(report.ratio, 4), "n_train": report.n_train, "n_test": report.n_test,
            "concepts_per_class": {c: len(v) for c, v in report.concepts_used.items()},
            "misclassified_explained": explained[0].to_dict() if explained else None}
