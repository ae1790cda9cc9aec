"""``t2c world``: generate shapes-world images and build the world's models."""

from __future__ import annotations

from pathlib import Path

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, user_errors

world_app = typer.Typer(help="The shapes world: procedural images with ground truth, and its trained models.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(world_app, name="world")


@world_app.command()
def images(
    out: Path = typer.Argument(..., help="Directory to write the images and manifest.jsonl to."),
    n: int = typer.Option(..., "--n", min=0, help="Number of images."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed: the same arguments give the same files."),
    shift: list[str] = typer.Option(
        None, "--shift", help="A planted shift, repeatable: EFFECT=PROBABILITY (night=0.5) or "
        "FACTOR=VALUE:FRACTION (color=purple:0.4)."),
    image_format: str = typer.Option("png", "--format", help="Image file format: png or jpeg."),
    as_json: bool = JsonOption,
) -> None:
    """Write N images of the shapes world to OUT with manifest.jsonl (each file's true factors and caption)."""
    from t2c_monitor.errors import ConfigError
    from t2c_monitor.world.generate import IMAGE_FORMATS, write_images
    from t2c_monitor.world.shifts import parse_shift

    with user_errors():
        if image_format not in IMAGE_FORMATS:
            raise ConfigError(f"Unknown image format {image_format!r}: use one of {', '.join(IMAGE_FORMATS)}.")
        parsed = parse_shift(shift or [])
        manifest = write_images(out, n, seed=seed, shift=parsed, image_format=image_format, progress=not as_json)
    payload = {"out": str(out), "n": n, "seed": seed, "shift": parsed.to_specs(), "format": image_format,
               "manifest": str(manifest)}
    if as_json:
        emit_json(payload)
        return
    shifted = f" with shift {' '.join(parsed.to_specs())}" if not parsed.is_empty else ""
    console.print(f"wrote {n} images{shifted} to {out} (truth in {manifest.name})")


@world_app.command()
def build(
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the world's training data and initialisation."),
    quick: bool = typer.Option(False, "--quick", help="A smaller world that builds in about a minute (for tests)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if this world is already cached."),
    threads: int = typer.Option(None, "--threads", min=1, help="Torch threads for training (default: all cores)."),
    models_dir: Path = typer.Option(None, "--models-dir", help="Cache directory (default: T2C_HOME/models)."),
    as_json: bool = JsonOption,
) -> None:
    """Train the world's CLIP, shape-only source encoder and caption LM (cached; rebuilt only when needed)."""
    from t2c_monitor.world.build import build_world, world_dir

    with user_errors():
        cached = (world_dir(seed, quick, models_dir) / "world.json").is_file() and not force
        world = build_world(seed=seed, quick=quick, models_dir=models_dir, force=force, progress=not as_json,
                            threads=threads)
    payload = {"root": str(world.root), "seed": world.seed, "quick": world.quick, "cached": cached,
               "clip": world.clip_spec, "source": world.source_spec, "caption_lm": str(world.caption_lm_dir),
               "build_seconds": world.metadata["build_seconds"].get("total")}
    if as_json:
        emit_json(payload)
        return
    how = "already built" if cached else f"built in {payload['build_seconds']:.0f} s"
    console.print(f"shapes world (seed {seed}{', quick' if quick else ''}) {how}: {world.root}\n"
                  f"  CLIP    {world.clip_spec}\n  source  {world.source_spec}\n  caption {world.caption_lm_dir}")
