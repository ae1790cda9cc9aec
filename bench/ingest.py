"""Ingest throughput: each stage alone, then the whole pipeline, on one image set and one encoder.

Stages, measured in one run on the same JPEG files:
- decode: read + decode + the encoder's preprocessing, on the pipeline's decode threads;
- encode: pre-decoded tensors through the encoder, aligner and concept scoring;
- store: precomputed vectors and scores stored by binary COPY (``ChunkWriter``, as ingest stores);
- end to end: ``t2c_monitor.ingest.ingest`` (what each flow shard runs), and the Prefect flow.
The serial bound is ``1 / (1/decode + 1/encode + 1/store)``: what running the stages one after the
other would give. Overlapping them should reach at least 0.9x of it on a CPU.

Models are real but randomly initialised (no weights can be downloaded): a timm encoder and an
open_clip model (CLIP space of the architecture's width), an aligner fitted by exact least squares
from the encoder's features to the CLIP image embeddings of a fitting set, a bank of 100 concepts.

    python bench/ingest.py [--images 512] [--encoder timm:resnet10t] [--clip open_clip:ViT-B-16]

On a GPU machine use real sizes: ``--encoder timm:resnet50 --clip open_clip:ViT-B-16``.
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

console = Console(stderr=True)

CONCEPT_WORDS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "snow", "night",
                 "fog", "rain", "indoors", "outdoors", "a car", "a person", "a dog", "a cat", "grass", "sand"]


def write_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> None:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(pixels).resize((size, size), Image.BILINEAR)
        draw = ImageDraw.Draw(image)
        x, y = rng.integers(0, size // 2, 2)
        draw.ellipse([x, y, x + size // 3, y + size // 3], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        image.save(folder / f"img-{i:05d}.jpg", quality=90)


def build_monitor(db, encoder_spec: str, clip_spec: str, fit_images: list, device: str | None):
    from t2c_monitor.aligner import fit_on_images
    from t2c_monitor.apply import record_models
    from t2c_monitor.concepts import BankDefinition, Concept, encode_bank
    from t2c_monitor.encoders import create_clip_model, create_source_encoder
    from t2c_monitor.monitor_models import MonitorModels
    from t2c_monitor.monitors import MonitorConfig

    encoder = create_source_encoder(encoder_spec, device=device)
    clip = create_clip_model(clip_spec, device=device)
    aligner = fit_on_images(encoder, clip, fit_images, ridge=1e-2, batch_size=32)
    concepts = [f"{w} {n}".strip() for w in CONCEPT_WORDS for n in ("", "scene", "photo", "object", "picture")][:100]
    bank = encode_bank(BankDefinition(name="bench", version=1, templates=("a photo of {}.",),
                                      concepts=tuple(Concept(name=c, phrasings=(c,)) for c in concepts)), clip)
    aligner_dir = Path(tempfile.mkdtemp(prefix="t2c-bench-aligner-"))
    aligner.save(aligner_dir)
    config = MonitorConfig(name="bench", encoder=encoder_spec, clip=clip_spec, aligner=aligner_dir,
                           bank=aligner_dir / "unused.yaml")
    record_models(db, MonitorModels(config=config, encoder=encoder, clip=clip, aligner=aligner, bank=bank))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=256, help="JPEG side in pixels")
    parser.add_argument("--encoder", default="timm:resnet10t")
    parser.add_argument("--clip", default="open_clip:ViT-B-16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--decode-threads", type=int, default=2)
    parser.add_argument("--store-writers", type=int, default=2, help="database connections storing chunks")
    parser.add_argument("--device", default=None)
    parser.add_argument("--skip-flow", action="store_true", help="do not time the Prefect flow")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement; the fastest counts")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    from PIL import Image

    from t2c_monitor.device import resolve_device
    from t2c_monitor.images import DecodedImage, load_image
    from t2c_monitor.ingest import IngestOptions, ingest, load_runtime, plan_batch
    from t2c_monitor.settings import Settings
    from t2c_monitor.sources import resolve_source
    from t2c_monitor.store import open_database
    from t2c_monitor.store.embedded import start_embedded
    from t2c_monitor.store.images import ChunkWriter, ImageChunk

    tmp = Path(tempfile.mkdtemp(prefix="t2c-bench-ingest-"))
    with console.status(f"writing {args.images} JPEGs of {args.size}px"):
        write_jpegs(tmp / "images", args.images, args.size)
        write_jpegs(tmp / "fit", 96, args.size, seed=1)
    url = start_embedded(tmp / "pgdata", delete_on_exit=True)
    os.environ["T2C_DATABASE_URL"] = url
    db = open_database(Settings(home=tmp / "home", database_url=url))
    with console.status("building the monitor (random-init models, aligner fit, bank)"):
        fit_images = [Image.open(p).convert("RGB") for p in sorted((tmp / "fit").iterdir())]
        build_monitor(db, args.encoder, args.clip, fit_images, args.device)
    runtime = load_runtime(db, "bench", device=args.device)
    items = resolve_source(tmp / "images")
    n = len(items)
    opts = IngestOptions(batch_size=args.batch_size, chunk_size=args.chunk_size, decode_threads=args.decode_threads,
                         store_writers=args.store_writers)

    # warm-up: first calls allocate and pick kernels
    warm = torch.stack([runtime.encoder.preprocess(im) for im in fit_images[: args.batch_size]])
    runtime.embed(warm)

    def decode(item):
        result = load_image(item, max_pixels=opts.max_image_pixels)
        assert isinstance(result, DecodedImage), result
        return runtime.encoder.preprocess(result.image)

    def decode_all():
        with ThreadPoolExecutor(opts.decode_threads) as pool:
            return list(pool.map(decode, items))

    def encode_all(pixels):
        out = [runtime.embed(torch.stack(pixels[lo : lo + opts.batch_size])) for lo in range(0, n, opts.batch_size)]
        return np.concatenate([v for v, _ in out]), np.concatenate([s for _, s in out])

    def store_all(vectors, scores, run):
        plan = plan_batch(db, runtime.record, items, source_uri="store-only", batch_id=f"store-only-{run}")
        with ChunkWriter(db.engine, batch_id=plan.batch_id, monitor_id=runtime.record.id,
                         bank_id=runtime.record.bank_id, writers=opts.store_writers) as writer:
            for lo in range(0, n, opts.chunk_size):
                hi = min(lo + opts.chunk_size, n)
                writer.submit(ImageChunk(uris=[i.uri for i in items[lo:hi]], failure_reason=[None] * (hi - lo),
                                         embeddings=vectors[lo:hi], scores=scores[lo:hi],
                                         sha256=[f"{lo + j:064x}" for j in range(hi - lo)]))

    def end_to_end(run):
        summary = ingest(db, "bench", tmp / "images", batch_id=f"end-to-end-{run}", runtime=runtime,
                         batch_size=opts.batch_size, chunk_size=opts.chunk_size, decode_threads=opts.decode_threads,
                         store_writers=opts.store_writers)
        if summary.n_ok != n:
            raise SystemExit(f"end-to-end stored {summary.n_ok} of {n} images: {summary}")
        return summary

    def timed(fn, *fn_args):
        started = time.perf_counter()
        out = fn(*fn_args)
        return time.perf_counter() - started, out

    # the stages take turns, so a burst of load from elsewhere hits each of them alike; the fastest run counts
    decode_s = encode_s = store_s = end_to_end_s = float("inf")
    for run in range(args.repeat):
        with console.status(f"run {run + 1}/{args.repeat}: decode, encode, store, end to end"):
            seconds, pixels = timed(decode_all)
            decode_s = min(decode_s, seconds)
            seconds, (vectors, scores) = timed(encode_all, pixels)
            encode_s = min(encode_s, seconds)
            seconds, _ = timed(store_all, vectors, scores, run)
            store_s = min(store_s, seconds)
            seconds, candidate = timed(end_to_end, run)
            if seconds < end_to_end_s:
                end_to_end_s, summary = seconds, candidate

    rates = {"decode": n / decode_s, "encode": n / encode_s, "store": n / store_s}
    serial_bound = 1.0 / sum(1.0 / r for r in rates.values())
    result = {
        "images": n, "image_size": args.size, "encoder": args.encoder, "clip": args.clip,
        "dim": runtime.aligner.d_out, "concepts": int(runtime.bank.shape[0]),
        "device": str(resolve_device(args.device)), "torch_threads": torch.get_num_threads(),
        "decode_threads": opts.decode_threads, "store_writers": opts.store_writers, "batch_size": opts.batch_size,
        "decode_img_per_s": round(rates["decode"], 1), "encode_img_per_s": round(rates["encode"], 1),
        "store_rows_per_s": round(rates["store"], 1), "serial_bound_img_per_s": round(serial_bound, 1),
        "end_to_end_img_per_s": round(n / end_to_end_s, 1),
        "end_to_end_vs_serial_bound": round((n / end_to_end_s) / serial_bound, 3),
        "end_to_end_vs_slowest_stage": round((n / end_to_end_s) / min(rates.values()), 3),
        "stage_seconds_in_pipeline": {k: round(v, 2) for k, v in summary.timings.items()},
        "repeat": args.repeat, "load_average": round(os.getloadavg()[0], 2),
    }
    if not args.skip_flow:
        from flows.ingest import IngestParams, ingest_flow

        with console.status("end to end (Prefect flow, including its start-up)"):
            started = time.perf_counter()
            flow_summary = ingest_flow(IngestParams(source=str(tmp / "images"), monitor="bench", batch_id="flow"))
            result["flow_img_per_s"] = round(n / (time.perf_counter() - started), 1)
            assert flow_summary["n_ok"] == n, flow_summary
    for key in ("decode_img_per_s", "encode_img_per_s", "store_rows_per_s", "serial_bound_img_per_s",
                "end_to_end_img_per_s"):
        console.print(f"{key:>24}: {result[key]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
