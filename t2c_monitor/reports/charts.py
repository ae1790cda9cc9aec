"""Charts of the reports: PNGs drawn with matplotlib's Agg backend, embedded as data URIs.

Concept names are user text: they are drawn as written (``text.parse_math`` off, so ``cost $5 and
$6`` is not mathtext and ``$\\frac{$`` cannot fail a report), and every figure is closed after
it is encoded.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from t2c_monitor.wording import change_word

MORE, LESS, QUIET = "#d62728", "#1f77b4", "#bbbbbb"


@contextmanager
def _figure(width: float, height: float, ncols: int = 1) -> Iterator[tuple[Any, Any]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False, "font.size": 9}):
        fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
        try:
            yield fig, axes[0]
        finally:
            plt.close(fig)


def _data_uri(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def ks_bars(concepts: Sequence[Any], top: int = 15) -> str:
    """The concepts that moved most by KS statistic (red: flagged more, blue: flagged less)."""
    shown = sorted(concepts, key=lambda c: c.ks_stat, reverse=True)[:top]
    with _figure(7, 0.32 * len(shown) + 1) as (fig, (ax,)):
        colours = [MORE if c.flagged and c.direction > 0 else LESS if c.flagged else QUIET for c in shown]
        ax.barh([c.name for c in shown][::-1], [c.ks_stat for c in shown][::-1], color=colours[::-1])
        ax.set_xlabel("KS statistic (window vs baseline)")
        ax.set_title("Concepts that moved most (red: more, blue: less, grey: not flagged)")
        return _data_uri(fig)


def distributions(concepts: Sequence[Any], reference: np.ndarray, current: np.ndarray, *,
                  label: str = "window") -> str | None:
    """Baseline against window score histograms, one panel per concept (the paper's Figure 8)."""
    if not concepts:
        return None
    with _figure(3.6 * len(concepts), 2.8, ncols=len(concepts)) as (fig, axes):
        for ax, concept in zip(axes, concepts, strict=True):
            ref, cur = reference[concept.index], current[:, concept.index]
            bins = np.linspace(min(ref.min(), cur.min()), max(ref.max(), cur.max()), 40)
            ax.hist(ref, bins=bins, density=True, alpha=0.5, label="baseline", color=LESS)
            ax.hist(cur, bins=bins, density=True, alpha=0.5, label=label, color=MORE)
            ax.set_title(f"{concept.name} ({change_word(concept.direction)})")
            ax.set_xlabel("concept score")
        axes[0].legend()
        return _data_uri(fig)


def ks_history(histories: dict[str, list[tuple[int, float, bool]]], current_audit: int) -> str | None:
    """Each concept's KS statistic over the monitor's recent audits (audit id, KS, flagged), the
    current audit marked."""
    if not histories or all(len(h) < 2 for h in histories.values()):
        return None
    with _figure(7, 2.6) as (fig, (ax,)):
        for name, points in histories.items():
            ids = [p[0] for p in points]
            line = ax.plot(ids, [p[1] for p in points], marker="o", markersize=3, label=name)[0]
            flagged = [(i, k) for i, k, f in points if f]
            if flagged:
                ax.scatter(*zip(*flagged, strict=True), s=28, facecolors="none", edgecolors=line.get_color())
        ax.axvline(current_audit, color="#888", linestyle=":", linewidth=1)
        ax.set_xlabel("audit (circled: flagged; dotted: this audit)")
        ax.set_ylabel("KS statistic")
        ax.legend(fontsize=7, ncols=2)
        return _data_uri(fig)


def presence(names: Sequence[str], shifts: Sequence[float], *, title: str, xlabel: str) -> str | None:
    """Concepts more (red) and less (blue) present than in the baseline, by how much."""
    if not names:
        return None
    with _figure(7, 0.3 * len(names) + 1) as (fig, (ax,)):
        ax.barh(list(names)[::-1], list(shifts)[::-1], color=[MORE if s > 0 else LESS for s in shifts][::-1])
        ax.axvline(0, color="#444", linewidth=0.8)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        return _data_uri(fig)
