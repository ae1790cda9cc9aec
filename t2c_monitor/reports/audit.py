"""The audit report: one self-contained HTML page a person opens from the alert, and its Markdown digest.

It leads with what changed, in words: the root causes, each with the flagged concepts that move
with it, the shift decoded into words, and any shift no concept names. Per root, the baseline and
window score distributions of the root and its echoes (the paper's Figure 8); for a concept that
grew, the window's images that express it most; for one that fell, the baseline's images that
express it most and the window's share of such images. Then each flagged concept's KS statistic
over the monitor's recent audits, links to the previous and next audits' reports, the settings in
plain words, and every concept in a table that sorts by any column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t2c_monitor.reports import charts
from t2c_monitor.reports.render import render, write_atomically
from t2c_monitor.reports.thumbnails import Thumb, top_images
from t2c_monitor.wording import change_word, concept_change

ECHOES_SHOWN = 3  # echoes drawn beside each root
HISTORY_CONCEPTS = 6
TOP_SHARE = 0.1  # "the baseline's images that express a concept most": its top 10%


@dataclass(frozen=True)
class AuditInputs:
    """What an audit's report is drawn from (``audit.write_report`` gathers it from the store)."""

    summary: Any  # audit.AuditSummary
    result: Any  # drift.DriftResult
    reference: np.ndarray  # baseline scores, sorted per concept (k, n)
    current: np.ndarray  # window scores (m, k), rows in the order of window_uris
    window_uris: list[str]
    baseline_scores: np.ndarray | None = None  # (b, k) scores of baseline images, rows as baseline_uris
    baseline_uris: list[str] = field(default_factory=list)
    unexplained: np.ndarray | None = None  # (m,) window images along the shift no concept names
    history: dict[str, list[tuple[int, float, bool]]] = field(default_factory=dict)  # concept -> (audit, KS, flagged)
    previous: int | None = None  # neighbouring audits of the monitor
    next: int | None = None


@dataclass(frozen=True)
class Examples:
    title: str
    thumbs: list[Thumb]
    note: str | None = None


@dataclass(frozen=True)
class RootView:
    name: str
    change: str  # "more grass"
    share: float | None
    echoes: list[str]
    chart: str | None
    examples: list[Examples]


@dataclass(frozen=True)
class AuditReportFiles:
    html: Path
    markdown: Path


def _examples(concept: Any, inputs: AuditInputs) -> Examples:
    """Images that show a concept's change: the window's most expressive ones when it grew; the
    baseline's when it fell, with the window's share of images as expressive as those."""
    j = concept.index
    if concept.direction > 0 or inputs.baseline_scores is None or not len(inputs.baseline_scores):
        return Examples(f"Window images most '{concept.name}'", top_images(inputs.current[:, j], inputs.window_uris))
    ref = inputs.reference[j]
    threshold = ref[min(int((1 - TOP_SHARE) * ref.size), ref.size - 1)]
    share = float(np.mean(inputs.current[:, j] >= threshold))
    return Examples(f"Baseline images most '{concept.name}' (what the window has fewer of)",
                    top_images(inputs.baseline_scores[:, j], inputs.baseline_uris),
                    f"The baseline's {TOP_SHARE:.0%} of images most '{concept.name}' are {share:.1%} of the window.")


def _roots(inputs: AuditInputs) -> list[RootView]:
    summary, result = inputs.summary, inputs.result
    by_name = {c.name: c for c in result.flagged}
    explanation = summary.explanation
    if explanation is not None and explanation.roots:
        groups = [(by_name[r.name], r.share, [by_name[e] for e in r.echoes if e in by_name])
                  for r in explanation.roots if r.name in by_name]
    else:  # no explanation (an old baseline, or no root): every flagged concept on its own
        groups = [(c, None, []) for c in result.flagged[:ECHOES_SHOWN]]
    views = []
    for root, share, echoes in groups:
        shown = [root, *echoes[:ECHOES_SHOWN]]
        views.append(RootView(
            name=root.name, change=concept_change(root.name, root.direction), share=share,
            echoes=[e.name for e in echoes], chart=charts.distributions(shown, inputs.reference, inputs.current),
            examples=[_examples(c, inputs) for c in shown[:2]]))
    return views


def _headline(summary: Any, named: list[str]) -> str:
    """'more 'grass' (3 more concepts moving with it)', with a shift no concept names when there is one."""
    flagged = summary.flagged
    if named and summary.explanation is not None and summary.explanation.roots:
        direction = {c.name: c.direction for c in flagged}
        headline = ", ".join(concept_change(n, direction[n], quoted=True) for n in named)
        echoes = len(flagged) - len(named)
        if echoes:
            pronoun = "it" if len(named) == 1 else "them"
            headline += f" ({echoes} more concept{'s' if echoes != 1 else ''} moving with {pronoun})"
    else:
        headline = (f"{len(flagged)} concept{'s' if len(flagged) != 1 else ''} shifted" if flagged
                    else "no concept shifted")
    if summary.unlisted:
        headline += ", and a shift no concept names" if flagged else ": a shift no concept names"
    return headline


def settings_in_words(summary: Any, result: Any) -> list[str]:
    """The audit's settings as sentences."""
    params = result.params
    correction = {"bh": "Benjamini-Hochberg (false discovery rate)", "bonferroni": "Bonferroni"}.get(
        params.get("correction"), str(params.get("correction")))
    lines = [
        f"Each of the {len(result.concepts)} concepts was tested with a two-sample Kolmogorov-Smirnov test of "
        f"{summary.n_current} window scores against {summary.n_baseline} baseline scores; p-values were corrected "
        f"across the bank with {correction}.",
        f"A concept is flagged when its corrected p-value is at most {params.get('alpha')}, its KS statistic at least "
        f"{params.get('min_ks')} and its mean score moved at least {params.get('min_effect_size')} baseline "
        "standard deviations.",
    ]
    explanation = summary.explanation
    if explanation is not None:
        p = explanation.params
        test = explanation.vector_test
        lines.append(
            f"Root causes: the fewest flagged concepts whose effects (what more of each looks like among the "
            f"baseline's aligned vectors, from its top {p['quantile']:.0%} of images) explain the window's mean shift; "
            f"each explains at least {p['min_share']:.0%} of it, significantly at level {p['alpha']}.")
        lines.append(
            f"The aligned vectors themselves: Hotelling's T² = {test.statistic:.1f} in the baseline's {test.dims} "
            f"principal components (p = {test.p_value:.2g}); a shift no concept names is reported when the part the "
            f"roots leave is significant at {p['vector_alpha']} and at least {p['unlisted_share']:.0%} of the shift.")
    return lines


def audit_context(inputs: AuditInputs) -> dict[str, Any]:
    summary, result = inputs.summary, inputs.result
    roots = _roots(inputs)
    root_names = {r.name for r in roots} if summary.explanation is not None and summary.explanation.roots else set()
    echoes = summary.echoes
    table = sorted(result.concepts, key=lambda c: (not c.flagged, c.name not in root_names, c.rank or 0, -c.ks_stat))
    shown_history = {name: points for name, points in list(inputs.history.items())[:HISTORY_CONCEPTS]}
    unexplained = None
    if inputs.unexplained is not None and len(inputs.unexplained) == len(inputs.current):
        unexplained = top_images(inputs.unexplained, inputs.window_uris)
    return {
        "summary": summary, "headline": _headline(summary, [r.name for r in roots]), "roots": roots,
        "words": summary.words, "explanation": summary.explanation, "unexplained": unexplained,
        "ks_chart": charts.ks_bars(result.concepts),
        "history_chart": charts.ks_history(shown_history, summary.id),
        "settings": settings_in_words(summary, result), "previous": inputs.previous, "next": inputs.next,
        "rows": [{"concept": c, "change": change_word(c.direction),
                  "cause": "root" if c.name in root_names else (f"moves with {echoes[c.name]}" if c.name in echoes
                                                                 else "")} for c in table],
    }


def write_audit_report(out_dir: Path, inputs: AuditInputs) -> AuditReportFiles:
    """Write ``out_dir/index.html`` and ``out_dir/digest.md`` (each whole or not at all)."""
    html = write_atomically(Path(out_dir) / "index.html", render("audit.html.j2", **audit_context(inputs)))
    markdown = write_atomically(Path(out_dir) / "digest.md", audit_digest(inputs.summary, str(html)))
    return AuditReportFiles(html=html, markdown=markdown)


def write_monitor_index(monitor_dir: Path, monitor: str, audits: list[Any]) -> Path:
    """``<reports>/<monitor>/index.html``: every audit of the monitor, newest first, linked to its
    report when one is written (what an older report's "all audits" link opens)."""
    from datetime import datetime

    written = {a.id for a in audits if (Path(monitor_dir) / f"audit-{a.id}" / "index.html").is_file()}
    return write_atomically(Path(monitor_dir) / "index.html", render(
        "index.html.j2", monitor=monitor, audits=audits, written=written,
        generated=f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"))


def audit_digest(summary: Any, report: str | None) -> str:
    """The Markdown digest of an audit, what alert messages carry: the headline, the roots with their
    echoes, the shift in words, a shift no concept names, the flagged concepts, and the report."""
    flagged = {c.name: c for c in summary.flagged}
    roots = [(r, flagged[r.name]) for r in (summary.explanation.roots if summary.explanation else [])
             if r.name in flagged]
    return render("audit.md.j2", summary=summary, report=report, roots=roots, change=concept_change,
                  change_word=change_word, headline=_headline(summary, [r.name for r, _ in roots]))
