"""``t2c decode``: vectors of a monitor's aligned space in words (concept-to-text)."""

from __future__ import annotations

from pathlib import Path

import typer

from t2c_monitor.cli.common import JsonOption, console, emit_json, user_errors


def register(app: typer.Typer) -> None:
    app.command()(decode)


def _line(decoded) -> str:
    return ", ".join(f"{text} ({score:.2f})" for text, score in decoded.texts) or "(nothing)"


def decode(
    monitor: str = typer.Option(..., "--monitor", "-m", help="the monitor whose CLIP space the vectors live in"),
    audit: int = typer.Option(None, "--audit", help="decode this audit's drift direction: what grew, what shrank"),
    vectors: Path = typer.Option(None, "--vectors", help=".npy or .safetensors ('vectors') of aligned vectors"),
    mode: str = typer.Option("nearest", "--mode", help="for --vectors: nearest terms, or a sparse mix of terms"),
    top: int = typer.Option(5, "--top", min=1, help="terms per vector"),
    bpe_words: bool = typer.Option(True, "--bpe-words/--bank-only",
                                   help="vocabulary: the bank's concepts and open_clip's 33k words, or the bank only"),
    as_json: bool = JsonOption,
) -> None:
    """Say in words what a vector of the monitor's space means (the `vocab` decoder)."""
    from t2c_monitor.decode.monitor import decode_audit, decode_vector_file
    from t2c_monitor.store import open_database

    if (audit is None) == (vectors is None):
        raise typer.BadParameter("give one of --audit ID or --vectors FILE", param_hint="--audit / --vectors")
    if mode not in ("nearest", "sparse"):
        raise typer.BadParameter(f"{mode!r} is not nearest or sparse", param_hint="--mode")
    with user_errors():
        db = open_database()
        if audit is not None:
            direction = decode_audit(db, monitor, audit, top=top, include_bpe_words=bpe_words, progress=not as_json)
            if as_json:
                emit_json({"monitor": monitor, "audit": audit, "grew": direction.grew.texts,
                           "shrank": direction.shrank.texts})
                return
            console.print(f"audit {audit} of {monitor}\n  grew:   {_line(direction.grew)}\n"
                          f"  shrank: {_line(direction.shrank)}", highlight=False)
            return
        decoded = decode_vector_file(db, monitor, vectors, mode=mode, top=top, include_bpe_words=bpe_words,
                                     progress=not as_json)
    if as_json:
        emit_json({"monitor": monitor, "vectors": str(vectors), "decoded": [d.texts for d in decoded]})
        return
    for i, d in enumerate(decoded):
        console.print(f"{i:>5}: {_line(d)}", highlight=False)
