"""A search's contact sheet: the images a concept-logic query or a text search found, on one page.

Written with the report templates (``search.html.j2``): the query, how many images each constraint
left (the paper's Figure 18), and every hit as a thumbnail with its batch and scores.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from t2c_monitor.reports.render import render, write_atomically
from t2c_monitor.reports.thumbnails import thumbnail


def _short(text: str, n: int = 16) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _hits(hits: list[Any], labels: list[str], means: list[float] | None = None,
          stds: list[float] | None = None) -> list[dict[str, Any]]:
    """Each hit's thumbnail and values: per constraint its standardised similarity (z), or the similarity."""
    out = []
    for h in hits:
        if means is not None and stds is not None:
            values = [f"{_short(label)} z {(s - m) / d if d > 0 else 0.0:+.1f}"
                      for label, s, m, d in zip(labels, h.similarities, means, stds, strict=True)]
        else:
            values = [f"similarity {s:.3f}" for s in h.similarities]
        out.append({"name": Path(h.uri).name, "uri": h.uri, "batch": h.batch, "src": thumbnail(h.uri),
                    "values": values})
    return out


def write_search_sheet(path: str | Path, result: Any) -> Path:
    """The contact sheet of a ``LogicResult`` or ``TextResult`` written to ``path`` (an .html file, or a
    directory to hold ``search-<time>.html``)."""
    from t2c_monitor.search.use_cases import LogicResult

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        path = path / f"search-{datetime.now():%Y%m%dT%H%M%S}.html"
    if isinstance(result, LogicResult):
        labels = [c.label for c in result.constraints]
        total = max(result.counts[0], 1)
        steps = [{"label": "corpus", "left": result.counts[0], "width": 300}] + [
            {"label": c.label, "left": n, "mean": m, "std": s, "width": max(1, round(300 * n / total))}
            for c, n, m, s in zip(result.constraints, result.counts[1:], result.means, result.stds, strict=True)]
        names = [c.concept for c in result.constraints]
        page = render("search.html.j2", title=" AND ".join(labels), kind="concept logic", result=result,
                      steps=steps, hits=_hits(result.hits, names, result.means, result.stds),
                      matched=result.n_matched,
                      generated=f"{datetime.now():%Y-%m-%d %H:%M}")
    else:
        page = render("search.html.j2", title=result.text, kind=f"text search ({result.method})", result=result,
                      steps=[], hits=_hits(result.hits, [result.text]), matched=len(result.hits),
                      generated=f"{datetime.now():%Y-%m-%d %H:%M}")
    return write_atomically(path, page)
