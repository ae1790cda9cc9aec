"""Benchmark: concept-to-text in the shapes world (issue 14).

Builds (or loads) the world and its exact aligner, then (t2c_monitor/world/decode_check.py):
- each decoder (vocab, prefix, guided) on held-out images, from the aligned source embedding and
  from CLIP's own image embedding: how often the decoded text names the image's true colour, size,
  background and shape (no other value of the factor named), and the aligned/CLIP ratio;
- the source model's classifier rows (Appendix I rescaling, aligned): is the right shape named;
- normalised sums of two bank concept vectors: does vocab's decomposition name both;
- speed: vocab on open_clip's whole-word vocabulary (>= 30,000 entries, nearest and sparse),
  prefix per vector (beam search through transformers' generate), guided seconds per vector.
Speed is the best of --repeats runs; the load average is printed beside it.

    python bench/decode.py [--seed 0] [--quick] [--images 500] [--guided-images 30] [--repeats 3]

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"vocab_ms_per_vector": 20.0, "prefix_ms_per_vector": 100.0, "vocab_size": 30_000, "class_vector_hits": 4,
           "prefix_aligned_over_clip": 0.85, "mixtures_named_by_both": 0.9}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def best_ms_per_vector(decoder, vectors, space, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        decoder.decode(vectors, space=space)
        times.append(time.perf_counter() - started)
    return 1000 * min(times) / len(vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the small test world instead of the full one")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--images", type=int, default=500, help="held-out images decoded by vocab and prefix")
    parser.add_argument("--guided-images", type=int, default=30, help="held-out images decoded by guided (slow)")
    parser.add_argument("--repeats", type=int, default=3, help="speed: best of this many runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from t2c_monitor.decode.factory import DecoderSettings, create_decoder
    from t2c_monitor.world.build import build_world
    from t2c_monitor.world.decode_check import decode_semantics
    from t2c_monitor.world.drift_check import fit_world_aligner
    from t2c_monitor.world.generate import generate

    if args.threads:
        torch.set_num_threads(args.threads)
    world = build_world(seed=args.seed, quick=args.quick, models_dir=args.models_dir)
    log(f"world at {world.root}; prefix decoder trained in {world.metadata['build_seconds']['prefix_decoder']:.0f} s "
        "of the build")
    with tempfile.TemporaryDirectory() as tmp:
        aligner = fit_world_aligner(world, Path(tmp) / "aligner", n_fit=1500 if args.quick else 10_000, progress=True)
        log(f"decoding {args.images} held-out images ({args.guided_images} with guided) and the class head ...")
        started = time.perf_counter()
        result = decode_semantics(world, aligner, n_images=args.images, guided_images=args.guided_images,
                                  progress=True)
        semantics_seconds = time.perf_counter() - started

    clip = world.clip_model(device="cpu")
    vectors = F.normalize(clip.encode_images(generate(200, seed=1234).pil_images()), dim=1)
    with tempfile.TemporaryDirectory() as cache:
        full = DecoderSettings(kind="vocab", cache_dir=Path(cache))
        started = time.perf_counter()
        nearest = create_decoder(full, clip=clip, progress=True)
        embed_seconds = time.perf_counter() - started
        sparse = create_decoder(DecoderSettings(kind="vocab", mode="sparse", cache_dir=Path(cache)), clip=clip,
                                image_mean=vectors.mean(0))
    vocab_size = len(nearest.vocabulary.terms)
    vocab_ms = best_ms_per_vector(nearest, vectors, clip.identity, args.repeats)
    sparse_ms = best_ms_per_vector(sparse, vectors, clip.identity, args.repeats)
    prefix = create_decoder(DecoderSettings(kind="prefix", prefix=world.prefix_decoder_dir), clip=clip,
                            image_mean=vectors.mean(0))
    prefix_ms = best_ms_per_vector(prefix, vectors, clip.identity, args.repeats)
    load = os.getloadavg()

    decoders = result["decoders"]
    for kind, r in decoders.items():
        log(f"{kind:<7} class vectors named {r['class_vector_hits']}/{result['class_vectors']}: {r['class_texts']}")
        for space in ("aligned", "clip"):
            rates = "  ".join(f"{f} {v:.3f}" for f, v in r[space].items())
            log(f"        {space:<8} {rates}  (n={r['images']})")
    mixtures = decoders["vocab"]["mixtures"]
    log(f"mixtures of two concepts named by both: {mixtures['named_by_both']}/{mixtures['pairs']}")
    log(f"speed (load average {load[0]:.2f}): vocab {vocab_size} entries {vocab_ms:.2f} ms/vector nearest, "
        f"{sparse_ms:.2f} sparse (embedded once in {embed_seconds:.1f} s); prefix {prefix_ms:.1f} ms/vector; "
        f"guided {decoders['guided']['seconds_per_vector']:.2f} s/vector")

    prefix_ratio = decoders["prefix"]["ratio"]
    met = {
        "vocab_speed": vocab_ms < TARGETS["vocab_ms_per_vector"] and vocab_size >= TARGETS["vocab_size"],
        "prefix_speed": prefix_ms < TARGETS["prefix_ms_per_vector"],
        "mixtures": mixtures["named_by_both"] >= TARGETS["mixtures_named_by_both"] * mixtures["pairs"],
        **{f"class_vectors_{k}": decoders[k]["class_vector_hits"] >= TARGETS["class_vector_hits"] for k in decoders},
        **{f"prefix_aligned_{f}": (prefix_ratio[f] or 0) >= TARGETS["prefix_aligned_over_clip"]
           for f in ("color", "size", "background")},
    }
    missed = [k for k, ok in met.items() if not ok]
    log("all targets met" if not missed else f"targets missed: {', '.join(missed)}")
    summary = {
        "vocab_size": vocab_size, "vocab_ms_per_vector": round(vocab_ms, 3), "vocab_sparse_ms_per_vector":
        round(sparse_ms, 3), "vocab_embed_seconds": round(embed_seconds, 1),
        "world_vocab_size": decoders["vocab"]["vocab_size"],
        "prefix_ms_per_vector": round(prefix_ms, 2),
        "guided_seconds_per_vector": round(decoders["guided"]["seconds_per_vector"], 3),
        "class_vectors": result["class_vectors"],
        "class_vector_hits": {k: r["class_vector_hits"] for k, r in decoders.items()},
        "named_rate": {k: {"aligned": {f: round(v, 4) for f, v in r["aligned"].items()},
                           "clip": {f: round(v, 4) for f, v in r["clip"].items()}, "images": r["images"]}
                       for k, r in decoders.items()},
        "mixtures": {k: mixtures[k] for k in ("pairs", "named_by_both")},
        "images": args.images, "guided_images": args.guided_images, "semantics_seconds": round(semantics_seconds, 1),
        "prefix_decoder_build_seconds": round(world.metadata["build_seconds"]["prefix_decoder"], 1),
        "load_average": [round(x, 2) for x in load], "quick": args.quick, "seed": args.seed,
        "targets_met": met,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
