"""An audit's report: one self-contained HTML page a person opens from the alert.

It leads with what changed, in words: the root causes (each with the flagged concepts that move
with it), the shift decoded into words, and any shift no concept names. Then pictures: the KS
statistic of the concepts that moved most (flagged ones in colour), the baseline and window score
distributions of the roots first, and the window's images that express each of those concepts
most, next to the full results table.
Charts are PNGs drawn with matplotlib's Agg backend; images are embedded as thumbnails, so the
page can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from t2c_monitor.wording import change_word

TOP_CONCEPTS = 15
SHOWN_DISTRIBUTIONS = 3
THUMBNAILS = 6


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _ks_chart(result: Any) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    top = sorted(result.concepts, key=lambda c: c.ks_stat, reverse=True)[:TOP_CONCEPTS]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(top) + 1))
    colours = ["#d62728" if c.flagged and c.direction > 0 else "#1f77b4" if c.flagged else "#bbbbbb" for c in top]
    ax.barh([c.name for c in top][::-1], [c.ks_stat for c in top][::-1], color=colours[::-1])
    ax.set_xlabel("KS statistic (window vs baseline)")
    ax.set_title("Concepts that moved most (red: more, blue: less, grey: not flagged)")
    return _png(fig)


def _distributions(shown: list[Any], reference: np.ndarray, current: np.ndarray) -> str | None:
    import matplotlib.pyplot as plt

    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3), squeeze=False)
    for ax, concept in zip(axes[0], shown, strict=True):
        ref, cur = reference[concept.index], current[:, concept.index]
        bins = np.linspace(min(ref.min(), cur.min()), max(ref.max(), cur.max()), 40)
        ax.hist(ref, bins=bins, density=True, alpha=0.5, label="baseline")
        ax.hist(cur, bins=bins, density=True, alpha=0.5, label="window")
        ax.set_title(f"{concept.name} ({change_word(concept.direction)})")
        ax.set_xlabel("concept score")
    axes[0][0].legend()
    return _png(fig)


def _thumbnail(uri: str) -> str | None:
    """A small PNG of a local image, or None when it cannot be read here (remote, moved, corrupt)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(uri.removeprefix("file://"))
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((96, 96))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return base64.b64encode(buffer.getvalue()).decode()


def _row(values: np.ndarray, image_uris: list[str]) -> str:
    """Thumbnails of the images with the highest ``values``, each with its value."""
    cells = []
    for i in np.argsort(-values)[:THUMBNAILS]:
        data = _thumbnail(image_uris[i]) if i < len(image_uris) else None
        label = html.escape(Path(image_uris[i]).name if i < len(image_uris) else "?")
        img = f'<img src="data:image/png;base64,{data}" alt="{label}">' if data else "<i>not readable here</i>"
        cells.append(f"<figure>{img}<figcaption>{label}<br>{values[i]:.3f}</figcaption></figure>")
    return f"<div class=row>{''.join(cells)}</div>"


def _examples(shown: list[Any], current: np.ndarray, image_uris: list[str]) -> str:
    return "".join(f"<h3>Window images most '{html.escape(c.name)}'</h3>{_row(current[:, c.index], image_uris)}"
                   for c in shown)


def _table(result: Any, roots: set[str], echoes: dict[str, str]) -> str:
    rows = sorted(result.concepts, key=lambda c: (not c.flagged, c.name not in roots, c.rank or 0, -c.ks_stat))

    def cause(c: Any) -> str:
        if c.name in roots:
            return "<b>root</b>"
        return f"moves with {html.escape(echoes[c.name])}" if c.name in echoes else ""

    body = "".join(
        f"<tr class={'flag' if c.flagged else ''}><td>{c.rank or ''}</td><td>{html.escape(c.name)}</td>"
        f"<td>{change_word(c.direction)}</td><td>{cause(c)}</td><td>{c.ks_stat:.3f}</td><td>{c.p_value:.2g}</td>"
        f"<td>{c.q_value:.2g}</td><td>{c.mean_ref:.4f}</td><td>{c.mean_cur:.4f}</td>"
        f"<td>{c.effect_size:+.2f}</td></tr>" for c in rows)
    return ("<table><tr><th>rank</th><th>concept</th><th>change</th><th>cause</th><th>KS</th><th>p</th><th>q</th>"
            f"<th>baseline mean</th><th>window mean</th><th>effect (SD)</th></tr>{body}</table>")


def _findings(summary: Any) -> str:
    """The roots with their echoes, the shift in words, and a shift no concept names."""
    from t2c_monitor.wording import concept_change

    parts = []
    explanation = summary.explanation
    if explanation is not None and explanation.roots:
        items = "".join(
            f"<li><b>{html.escape(concept_change(r.name, r.direction))}</b>: explains {r.share:.0%} of the shift"
            + (f"; moving with it: {html.escape(', '.join(r.echoes))}" if r.echoes else "") + "</li>"
            for r in explanation.roots)
        parts.append(f"<h2>Root causes</h2><ul>{items}</ul>")
    words = summary.words
    if words is not None and words.text():
        parts.append(f"<p>In words: <b>{html.escape(words.text())}</b></p>")
    if words is not None and words.sentence:
        parts.append(f"<p>In a sentence ({html.escape(words.decoder or '')}): <i>{html.escape(words.sentence)}</i></p>")
    if summary.unlisted:
        said = ", ".join(words.unlisted) if words is not None and words.unlisted else "no words decoded"
        parts.append(
            f"<p class=unlisted><b>A shift no concept names</b>: {explanation.residual_share:.0%} of the shift is not "
            f"explained by the bank (in words: {html.escape(said)}). "
            f"<code>t2c concepts suggest --monitor {html.escape(summary.monitor)} --audit {summary.id}</code> "
            "proposes concepts to add.</p>")
    if explanation is not None:
        test = explanation.vector_test
        parts.append(f"<p class=small>Aligned vectors: Hotelling T² {test.statistic:.1f} in {test.dims} principal "
                     f"components, p = {test.p_value:.2g}.</p>")
    if summary.note:
        parts.append(f"<p class=small>Note: {html.escape(summary.note)}</p>")
    return "".join(parts)


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd}"
          "tr.flag{background:#fff3cd}.row{display:flex;gap:8px;flex-wrap:wrap}"
          "figure{margin:0;text-align:center;font-size:11px}.unlisted{background:#fde2e1;padding:6px}"
          ".small{font-size:12px;color:#555}")


def write_audit_report(out_dir: Path, summary: Any, *, result: Any, reference: np.ndarray, current: np.ndarray,
                       image_uris: list[str], unexplained: np.ndarray | None = None) -> Path:
    """Write ``out_dir/index.html`` for an audit (``summary``: ``audit.AuditSummary``; ``result``: the
    detector's ``DriftResult``; ``reference``: baseline scores ``(k, n_ref)``; ``current``: window
    scores ``(n_cur, k)`` in the order of ``image_uris``; ``unexplained``: each window image's
    projection on the shift no concept names, when there is one). Returns the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    from t2c_monitor.wording import concept_change

    flagged = result.flagged
    roots = list(summary.roots) if flagged else []
    ordered = roots + [c for c in flagged if c not in roots]
    if roots:
        headline = ", ".join(concept_change(c.name, c.direction, quoted=True) for c in roots)
        echoes = len(flagged) - len(roots)
        if echoes:
            pronoun = "it" if len(roots) == 1 else "them"
            headline += f" ({echoes} more concept{'s' if echoes != 1 else ''} moving with {pronoun})"
    else:
        headline = (f"{len(flagged)} concept{'s' if len(flagged) != 1 else ''} shifted" if flagged
                    else "no concept shifted")
    if summary.unlisted:
        headline += ", and a shift no concept names" if flagged else ": a shift no concept names"
    shown = ordered[:SHOWN_DISTRIBUTIONS]
    distributions = _distributions(shown, reference, current)
    page = [
        f"<!doctype html><meta charset=utf-8><title>t2c audit {summary.id}: {html.escape(summary.monitor)}</title>",
        f"<style>{_STYLE}</style>",
        f"<h1>Monitor {html.escape(summary.monitor)}: {headline}</h1>",
        f"<p>Audit {summary.id}: {html.escape(summary.window_text())}, {summary.n_current} images, against baseline "
        f"{summary.baseline_id} ({summary.n_baseline} scores per concept). Test: two-sample KS per concept, "
        f"{html.escape(str(result.params))}.</p>",
        _findings(summary),
        f'<img alt="KS statistics" src="data:image/png;base64,{_ks_chart(result)}">',
    ]
    if unexplained is not None and len(unexplained) == len(current):
        page.append(f"<h2>Window images most along the shift no concept names</h2>{_row(unexplained, image_uris)}")
    if distributions:
        page.append(f'<h2>Score distributions</h2><img alt="distributions" src="data:image/png;base64,'
                    f'{distributions}">')
    page += [_examples(shown, current, image_uris), "<h2>Every concept</h2>",
             _table(result, {c.name for c in roots}, summary.echoes)]
    path = out_dir / "index.html"
    path.write_text("\n".join(page), encoding="utf-8")
    return path
