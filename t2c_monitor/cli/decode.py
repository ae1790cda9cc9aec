"""``t2c decode`` (vectors of a monitor's aligned space in words) and ``t2c decoder train``."""

from __future__ import annotations

from pathlib import Path

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, styled, user_errors

decoder_app = typer.Typer(help="Train concept-to-text decoders.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(decode)
    app.add_typer(decoder_app, name="decoder")


def _line(decoded) -> str:
    return " | ".join(f"{text} ({score:.2f})" for text, score in decoded.texts) or "(nothing)"


def decode(
    monitor: str = typer.Option(..., "--monitor", "-m", help="the monitor whose CLIP space the vectors live in"),
    audit: int = typer.Option(None, "--audit", help="an audit's drift direction: what grew, what shrank (vocab), "
                              "or the shifted window in sentences (prefix, guided)"),
    vectors: Path = typer.Option(None, "--vectors", help=".npy or .safetensors ('vectors') of aligned vectors"),
    images: str = typer.Option(None, "--images", help="images (file, folder or URI) embedded and aligned first"),
    class_head: bool = typer.Option(False, "--class-head", help="the source model's classifier rows, one per class"),
    decoder: str = typer.Option(None, "--decoder", help="vocab, prefix or guided (default: the monitor's decode: "
                                "setting)"),
    mode: str = typer.Option("nearest", "--mode", help="vocab decoder: nearest terms, or a sparse mix of terms"),
    top: int = typer.Option(None, "--top", min=1, help="texts per vector (default: the monitor's decode.top)"),
    bpe_words: bool = typer.Option(None, "--bpe-words/--bank-only",
                                   help="vocabulary: the bank's concepts and open_clip's words, or the bank only"),
    as_json: bool = JsonOption,
) -> None:
    """Say in words what vectors of the monitor's space mean (concept-to-text)."""
    from t2c_monitor.decode import monitor as use_case
    from t2c_monitor.decode.factory import DECODER_KINDS
    from t2c_monitor.store import open_database

    chosen = [flag for flag, given in (("--audit", audit is not None), ("--vectors", vectors is not None),
                                       ("--images", images is not None), ("--class-head", class_head)) if given]
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --audit ID, --vectors FILE, --images PATH or --class-head",
                                 param_hint="/".join(chosen) or "--audit / --vectors / --images / --class-head")
    if mode not in ("nearest", "sparse"):
        raise typer.BadParameter(f"{mode!r} is not nearest or sparse", param_hint="--mode")
    if decoder is not None and decoder not in DECODER_KINDS:
        raise typer.BadParameter(f"{decoder!r} is not one of {', '.join(DECODER_KINDS)}", param_hint="--decoder")
    options = {"kind": decoder, "mode": mode, "top": top, "include_bpe_words": bpe_words, "progress": not as_json}
    skipped = []
    with user_errors():
        db = open_database()
        if audit is not None and decoder in ("prefix", "guided"):
            said = use_case.decode_audit_sentences(db, monitor, audit, kind=decoder, top=top or 3,
                                                   progress=not as_json)
            if as_json:
                emit_json({"monitor": monitor, "audit": audit, "decoder": decoder, "texts": said.texts})
                return
            console.print(f"audit {audit} of {monitor} ({decoder}): {_line(said)}", highlight=False)
            return
        if audit is not None:
            direction = use_case.decode_audit(db, monitor, audit, top=top or 5, include_bpe_words=bpe_words,
                                              progress=not as_json)
            if as_json:
                emit_json({"monitor": monitor, "audit": audit, "grew": direction.grew.texts,
                           "shrank": direction.shrank.texts})
                return
            console.print(f"audit {audit} of {monitor}\n  grew:   {_line(direction.grew)}\n"
                          f"  shrank: {_line(direction.shrank)}", highlight=False)
            return
        if vectors is not None:
            rows, what = use_case.decode_vector_file(db, monitor, vectors, **options), str(vectors)
        elif images is not None:
            result = use_case.decode_images(db, monitor, images, **options)
            rows, skipped, what = result.rows, result.skipped, images
        else:
            rows, what = use_case.decode_class_head(db, monitor, **options), "class head"
    if as_json:
        emit_json({"monitor": monitor, "source": what, "decoded": [r.to_dict() for r in rows],
                   "skipped": [{"uri": s.uri, "reason": s.reason} for s in skipped]})
        return
    width = min(max((len(r.label) for r in rows), default=5), 60)
    for row in rows:
        console.print(f"{row.label[-width:]:>{width}}: {_line(row.decoded)}", highlight=False)
    for s in skipped:
        console.print(styled("[yellow]skipped[/] {}: {}", s.uri, s.reason))


@decoder_app.command("train")
def train(
    clip: str = typer.Option(..., "--clip", help="CLIP model spec, e.g. open_clip:ViT-B-32@laion2b_s34b_b79k"),
    lm: str = typer.Option("gpt2", "--lm", help="causal LM: hub name or save_pretrained directory"),
    corpus: Path = typer.Option(..., "--corpus", help="text file of captions, one per line"),
    out: Path = typer.Option(..., "--out", help="directory to write the decoder to"),
    steps: int = typer.Option(1500, "--steps", min=1, help="training steps"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    prefix_length: int = typer.Option(4, "--prefix-length", min=1, help="prefix embeddings per CLIP vector"),
    noise_norm: float = typer.Option(0.25, "--noise-norm", min=0.0, help="expected length of the noise added to "
                                     "each centred unit text embedding (bridges the modality gap)"),
    noise_norm_max: float = typer.Option(1.0, "--noise-norm-max", min=0.0, help="each caption's noise length is "
                                         "drawn from --noise-norm to this"),
    freeze_lm: bool = typer.Option(False, "--freeze-lm", help="train only the mapping network"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1),
    device: str = typer.Option(None, "--device", help="torch device (default: T2C_DEVICE, 'auto')"),
    as_json: bool = JsonOption,
) -> None:
    """Train a prefix decoder on captions alone (CapDec): CLIP text embeddings plus noise -> the caption."""
    from t2c_monitor.decode.prefix import PrefixTraining, train_decoder

    with user_errors():
        training = PrefixTraining(steps=steps, batch_size=batch_size, prefix_length=prefix_length,
                                  noise_norm=noise_norm, noise_norm_max=noise_norm_max, train_lm=not freeze_lm,
                                  seed=seed)
        result = train_decoder(clip, lm, corpus, out, training, device=device, progress=not as_json)
    if as_json:
        emit_json(result.to_dict())
        return
    console.print(f"prefix decoder written to {result.out}: {result.captions} captions, {result.steps} steps, "
                  f"final loss {result.final_loss:.3f}, {result.seconds:.0f} s", highlight=False)
