"""Benchmark: does text-to-concept work in the shapes world?

Builds (or loads) the world, generates held-out images, fits an exact aligner from the shape-only
source encoder to the world CLIP, and measures against the generator's ground truth: aligner R²,
zero-shot accuracy per factor in CLIP space and aligned space (class vectors from the default
concept bank), and per effect the AUROC of its concept score in both spaces. Then the drift
semantics (t2c_monitor/world/drift_check.py): every single planted shift (each effect raised and
lowered, a colour, background, size and shape forced) must be flagged and be the first root cause
the right way; at least 95% of all roots must be the planted concept or another value of the factor
the shift moved; in at least 3 of 4 pairs of look-alike shifts both must be roots and nothing else;
with an effect's concept removed from the bank, the audit must report a shift the bank does not
explain and name the effect in the decoded words' top 3 for at least 3 of the 4 effects; and 20
clean audits may raise at most one flag of any kind in total.

    python bench/world.py [--seed 0] [--quick] [--rebuild] [--threads N]

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

TARGETS = {
    "r2": 0.75,
    "clip_zero_shot": {"color": 0.9, "background": 0.9, "size": 0.9, "shape": 0.8},
    "effect_auroc_clip": 0.95,
    "aligned_over_clip": {"color": 0.85, "background": 0.85, "size": 0.85},
    "roots_precision": 0.95,
    "pairs_share": 0.75,
    "unlisted_share": 0.75,
    "logic_precision": 0.9,  # of each listed query's returned images
    "logic_queries": 5,  # listed queries that must reach it
    "cbm_over_probe": 0.9,
}


def targets_met(result: dict) -> dict[str, bool]:
    met = {"r2": result["r2"] >= TARGETS["r2"]}
    for factor, target in TARGETS["clip_zero_shot"].items():
        met[f"clip_{factor}"] = result["zero_shot"][factor]["clip"] >= target
    for effect, scores in result["effect_auroc"].items():
        met[f"auroc_{effect}"] = scores["clip"] >= TARGETS["effect_auroc_clip"]
    for factor, ratio in TARGETS["aligned_over_clip"].items():
        zs = result["zero_shot"][factor]
        met[f"aligned_{factor}"] = zs["aligned"] >= ratio * zs["clip"]
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the small test world instead of the full one")
    parser.add_argument("--rebuild", action="store_true", help="retrain even if the world is cached")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for training (default: all cores)")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--n-fit", type=int, default=10_000, help="aligner pairs (512x128 weights: 4000 overfit)")
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--n-ref", type=int, default=4000, help="baseline images of the drift check")
    parser.add_argument("--n-cur", type=int, default=500, help="window images of each drift audit")
    parser.add_argument("--clean-audits", type=int, default=20)
    parser.add_argument("--no-drift", action="store_true", help="skip the drift semantics check")
    parser.add_argument("--no-search", action="store_true", help="skip the search and CBM semantics check")
    parser.add_argument("--n-search", type=int, default=2000, help="images ingested for the concept-logic check")
    parser.add_argument("--n-cbm", type=int, default=3000, help="labelled images of the CBM check")
    args = parser.parse_args()

    import torch

    from t2c_monitor.world.build import build_world, world_dir
    from t2c_monitor.world.evaluate import evaluate_world

    cached = (world_dir(args.seed, args.quick, args.models_dir) / "world.json").is_file() and not args.rebuild
    print(f"{'loading' if cached else 'building'} the shapes world (seed {args.seed}"
          f"{', quick' if args.quick else ''})", file=sys.stderr, flush=True)
    world = build_world(seed=args.seed, quick=args.quick, models_dir=args.models_dir, force=args.rebuild,
                        threads=args.threads)
    build_seconds = world.metadata["build_seconds"]
    print(f"world at {world.root}; its build took {build_seconds['total']:.0f} s "
          f"({', '.join(f'{k} {v:.0f}s' for k, v in build_seconds.items() if k != 'total')})",
          file=sys.stderr, flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result = evaluate_world(world, n_fit=args.n_fit, n_test=args.n_test, device="cpu", progress=True)
    eval_seconds = time.perf_counter() - started

    print(f"aligner R² {result['r2']:.3f} (cosine {result['cosine']:.3f})", file=sys.stderr)
    print(f"{'factor':<12}{'CLIP':>8}{'aligned':>9}{'chance':>8}", file=sys.stderr)
    for factor, zs in result["zero_shot"].items():
        print(f"{factor:<12}{zs['clip']:>8.3f}{zs['aligned']:>9.3f}{zs['chance']:>8.3f}", file=sys.stderr)
    print(f"{'effect AUROC':<12}{'CLIP':>8}{'aligned':>9}", file=sys.stderr)
    for effect, scores in result["effect_auroc"].items():
        print(f"{effect:<12}{scores['clip']:>8.3f}{scores['aligned']:>9.3f}", file=sys.stderr)
    drift = None
    if not args.no_drift:
        import tempfile
        from pathlib import Path

        from t2c_monitor.world.drift_check import drift_semantics, fit_world_aligner

        print(f"drift semantics: each planted shift in {args.n_cur} images against {args.n_ref} baseline images, "
              f"and {args.clean_audits} clean audits (aligned space, default KS settings) ...", file=sys.stderr)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            aligner = fit_world_aligner(world, Path(tmp) / "aligner", n_fit=args.n_fit)
            drift = drift_semantics(world, aligner, n_ref=args.n_ref, n_cur=args.n_cur, clean_audits=args.clean_audits)
        drift["seconds"] = round(time.perf_counter() - started, 1)
        for spec, check in drift["shifts"].items():
            print(f"  {spec:<22} {check['concept']:<8} flagged={check['flagged']!s:<5} KS rank={check['rank']} "
                  f"roots={' '.join(check['roots'])}", file=sys.stderr)
        for label, pair in drift["pairs"].items():
            print(f"  pair {label:<24} roots={', '.join(pair['roots'])} ok={pair['ok']}", file=sys.stderr)
        for effect, found in drift["unlisted"].items():
            print(f"  unlisted {effect:<8} reported={found['unlisted']} words={', '.join(found['words'])} "
                  f"named={found['named']}", file=sys.stderr)
        print(f"  first root right in {drift['roots_first_ok']}/{drift['shifts_total']}; root precision "
              f"{drift['roots_precision']:.3f}; pairs {drift['pairs_ok']}/{drift['pairs_total']}; unlisted named "
              f"{drift['unlisted_named']}/{drift['unlisted_total']}; {drift['clean_flags']} flags in "
              f"{drift['clean_audits']} clean audits", file=sys.stderr)
    search = None
    if not args.no_search:
        search = search_semantics(world, args)
    met = targets_met(result)
    if search is not None:
        met["logic_queries"] = search["logic_queries_ok"] >= TARGETS["logic_queries"]
        met["cbm_over_probe"] = search["cbm"]["ratio"] >= TARGETS["cbm_over_probe"]
    if drift is not None:
        met["drift_shifts_flagged"] = drift["shifts_flagged"] == drift["shifts_total"]
        met["roots_first_ok"] = drift["roots_first_ok"] == drift["shifts_total"]
        met["roots_precision"] = (drift["roots_precision"] or 0.0) >= TARGETS["roots_precision"]
        met["pairs_ok"] = drift["pairs_ok"] >= TARGETS["pairs_share"] * drift["pairs_total"]
        met["unlisted_named"] = drift["unlisted_named"] >= TARGETS["unlisted_share"] * drift["unlisted_total"]
        met["drift_clean_at_most_one_flag"] = drift["clean_flags"] <= 1
    missed = [k for k, ok in met.items() if not ok]
    print("all targets met" if not missed else f"targets missed: {', '.join(missed)}", file=sys.stderr)

    summary = {
        "r2": round(result["r2"], 4),
        "cosine": round(result["cosine"], 4),
        "zero_shot_clip": {f: round(z["clip"], 4) for f, z in result["zero_shot"].items()},
        "zero_shot_aligned": {f: round(z["aligned"], 4) for f, z in result["zero_shot"].items()},
        "effect_auroc_clip": {e: round(s["clip"], 4) for e, s in result["effect_auroc"].items()},
        "effect_auroc_aligned": {e: round(s["aligned"], 4) for e, s in result["effect_auroc"].items()},
        "build_seconds": round(build_seconds["total"], 1),
        "build_stage_seconds": {k: round(v, 1) for k, v in build_seconds.items() if k != "total"},
        "build_cached": cached,
        "eval_seconds": round(eval_seconds, 1),
        "n_fit": args.n_fit, "n_test": args.n_test, "seed": args.seed, "quick": args.quick,
        "world_key": world.metadata["key"],
        "roots_precision": drift and drift["roots_precision"],
        "roots_first_ok": drift and f"{drift['roots_first_ok']}/{drift['shifts_total']}",
        "pairs_ok": drift and f"{drift['pairs_ok']}/{drift['pairs_total']}",
        "unlisted_named": drift and f"{drift['unlisted_named']}/{drift['unlisted_total']}",
        "clean_flags": drift and drift["clean_flags"],
        "drift": drift,
        "logic_queries_ok": search and f"{search['logic_queries_ok']}/{len(search['logic'])}",
        "logic_pairs_mean_precision": search and search["pairs"]["mean_precision"],
        "cbm_accuracy": search and search["cbm"]["accuracy"],
        "cbm_probe_accuracy": search and search["cbm"]["probe_accuracy"],
        "cbm_over_probe": search and search["cbm"]["ratio"],
        "search": search,
        "targets_met": all(met.values()),
        "targets_missed": missed,
    }
    print(json.dumps(summary))


def search_semantics(world, args) -> dict:
    """Concept logic over an ingested batch of the world (a throwaway embedded PostgreSQL), and a shape CBM
    against a linear probe (t2c_monitor/world/search_check.py)."""
    import os
    import tempfile
    from pathlib import Path

    from t2c_monitor.settings import reset_settings_cache
    from t2c_monitor.store import open_database
    from t2c_monitor.store.embedded import stop_embedded
    from t2c_monitor.world.drift_check import fit_world_aligner
    from t2c_monitor.world.search_check import cbm_semantics, logic_semantics, pair_semantics, world_monitor

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="t2c-bench-world-") as tmp:
        os.environ["T2C_HOME"] = tmp
        os.environ.pop("T2C_DATABASE_URL", None)
        reset_settings_cache()
        aligner = fit_world_aligner(world, Path(tmp) / "aligner", n_fit=args.n_fit)
        db = open_database()
        try:
            print(f"search semantics: {args.n_search} world images ingested from their manifest ...",
                  file=sys.stderr)
            monitor = world_monitor(db, world, aligner, Path(tmp) / "search", n=args.n_search, seed=31337)
            clip = world.clip_model(device="cpu")
            logic = logic_semantics(db, monitor, clip=clip)
            pairs = pair_semantics(db, monitor)
        finally:
            db.engine.dispose()
            for pid in Path(tmp).glob("**/postmaster.pid"):
                stop_embedded(pid.parent)
        cbm = cbm_semantics(world, aligner, n=args.n_cbm)
    for name, check in logic.items():
        print(f"  {name:<48} {' '.join(check['constraints']):<52} left {check['counts']} precision "
              f"{check['precision']:.2f}", file=sys.stderr)
    print(f"  every pair of non-shape concepts at +1.5: mean precision {pairs['mean_precision']:.3f}, "
          f"{pairs['share_at_least_0_9']:.0%} at least 0.9 ({pairs['pairs']} pairs, {pairs['empty']} empty)",
          file=sys.stderr)
    print(f"  CBM on shape: {cbm['accuracy']:.3f} against a linear probe's {cbm['probe_accuracy']:.3f} "
          f"({cbm['ratio']:.2f}x)", file=sys.stderr)
    ok = sum(c["precision"] >= TARGETS["logic_precision"] for c in logic.values())
    return {"logic": logic, "logic_queries_ok": ok, "pairs": pairs, "cbm": cbm,
            "seconds": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    main()
