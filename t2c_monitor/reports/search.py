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


def _hits(hits: list[Any], values: list[str]) -> list[dict[str, Any]]:
    return [{"name": Path(h.uri).name, "uri": h.uri, "batch": h.batch, "src": thumbnail(h.uri),
             "values": [f"{label} {value:+.3f}" if label else f"{value:.3f}"
                        for label, value in zip(values, h.similarities, strict=True)]}
            for h in hits]


def write_search_sheet(path: str | Path, result: Any) -> Path:
    """The contact sheet of a ``LogicResult`` or ``TextResult`` written to ``path`` (an .html file, or a
    directory to hold ``search-<time>.html``)."""
    from t2c_monitor.search.use_cases import LogicResult

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        path = path / f"search-{datetime.now():%Y%m%dT%H%M%S}.html"
    if isinstance(result, LogicResult):
        labels = [c.label for c in result.constraints]
        steps = [{"label": "corpus", "left": result.counts[0]}] + [
            {"label": c.label, "left": n, "mean": m, "std": s}
            for c, n, m, s in zip(result.constraints, result.counts[1:], result.means, result.stds, strict=True)]
        page = render("search.html.j2", title=" AND ".join(labels), kind="concept logic", result=result,
                      steps=steps, hits=_hits(result.hits, labels), matched=result.n_matched,
                      generated=f"{datetime.now():%Y-%m-%d %H:%M}")
    else:
        page = render("search.html.j2", title=result.text, kind=f"text search ({result.method})", result=result,
                      steps=[], hits=_hits(result.hits, [""]), matched=len(result.hits),
                      generated=f"{datetime.now():%Y-%m-%d %H:%M}")
    return write_atomically(path, page)
