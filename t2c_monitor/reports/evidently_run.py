"""Each audit in evidently, as its users expect: a ``Report`` over the concept-score columns (KS per
concept) saved beside ours, and its snapshot in a local evidently ``Workspace`` under ``$T2C_HOME``
(one project per monitor, one run per audit), so ``evidently ui`` (``t2c ui``) browses every audit.

The drift values agree with ours: each concept is a ``ValueDrift(method="ks")`` over the same
baseline and window scores (scipy's ``ks_2samp``, whose p-values ours equal). Its threshold carries
our decision: the largest p-value our correction lets through (Benjamini-Hochberg's cut-off, or
``alpha/m`` for Bonferroni) for a concept whose shift is large enough, and 0 for one our effect-size
gates hold back, so evidently marks drifted exactly the concepts we flag. A bank larger than
``MAX_COLUMNS`` is reported on its flagged concepts and those with the largest KS statistics
(evidently spends about a tenth of a second per column).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_COLUMNS = 100
EVIDENTLY_HTML = "evidently.html"
RUN_MARKER = "evidently.json"


@dataclass(frozen=True)
class EvidentlyRun:
    workspace: Path
    project_id: str
    run_id: str
    html: Path
    columns: list[str]


def cutoff(p_values: np.ndarray, alpha: float, correction: str) -> float:
    """The largest p-value the correction lets through at ``alpha`` (0 when none passes)."""
    p = np.sort(np.asarray(p_values, dtype=np.float64))
    m = p.size
    if correction == "bonferroni":
        return alpha / m
    passing = np.flatnonzero(p <= alpha * np.arange(1, m + 1) / m)
    return float(p[passing[-1]]) if passing.size else 0.0


def _thresholds(result: Any) -> dict[str, float]:
    params = result.params
    p_cut = cutoff(np.array([c.p_value for c in result.concepts]), params["alpha"], params["correction"])
    # evidently marks drift when p < threshold: just above the cut-off for a concept large enough to flag
    above = np.nextafter(p_cut, np.inf)
    return {c.name: float(above) if c.flagged else 0.0 for c in result.concepts}


def _columns(result: Any) -> list[Any]:
    if len(result.concepts) <= MAX_COLUMNS:
        return list(result.concepts)
    flagged = list(result.flagged)
    rest = sorted((c for c in result.concepts if not c.flagged), key=lambda c: -c.ks_stat)
    return sorted(flagged + rest[: max(MAX_COLUMNS - len(flagged), 0)], key=lambda c: c.index)


_DATA_BLOCK = "<script>\n    var "


def script_safe(page: str) -> str:
    """evidently's page with its data block safe for any concept or monitor name.

    evidently writes the report's data as JSON inside a ``<script>`` without escaping: a concept named
    ``</script><script>...`` would end the block and run. JSON holds no raw newline, so the block ends at
    the first newline followed by ``</script>``; inside it every ``<`` is written ``\\u003c``, which JSON
    and JavaScript read as ``<`` and HTML does not read at all.
    """
    start = page.find(_DATA_BLOCK)
    if start < 0:
        raise ValueError("evidently's page has no data block where it was expected: check the evidently version")
    body = start + len("<script>")
    end = page.index("\n</script>", body)
    return page[:body] + page[body:end].replace("<", "\\u003c") + page[end:]


def workspace_dir() -> Path:
    from t2c_monitor.settings import get_settings

    return get_settings().home / "evidently"


def export_audit(out_dir: Path, summary: Any, result: Any, reference: np.ndarray, current: np.ndarray,
                 workspace: Path | None = None) -> EvidentlyRun:
    """Run evidently on the audit's concept scores, save its HTML in ``out_dir`` and its snapshot as the
    audit's run in the monitor's workspace project (replacing the run an earlier write added)."""
    import warnings

    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.ui.workspace import Workspace

    columns = _columns(result)
    names = [c.name for c in columns]
    thresholds = _thresholds(result)
    ref = pd.DataFrame(reference[[c.index for c in columns]].T, columns=names)  # one sorted row per concept
    cur = pd.DataFrame(current[:, [c.index for c in columns]], columns=names)
    definition = DataDefinition(numerical_columns=names)
    report = Report([ValueDrift(column=n, method="ks", threshold=thresholds[n]) for n in names],
                    metadata={"monitor": summary.monitor, "audit": str(summary.id)}, tags=["t2c", summary.monitor])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = report.run(Dataset.from_pandas(cur, data_definition=definition),
                              Dataset.from_pandas(ref, data_definition=definition))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / EVIDENTLY_HTML
    html.write_text(script_safe(snapshot.get_html_str(as_iframe=False)), encoding="utf-8")

    root = Path(workspace or workspace_dir())
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace.create(str(root))
    found = ws.search_project(summary.monitor)
    project = found[0] if found else ws.create_project(summary.monitor, description=f"t2c monitor {summary.monitor}")
    marker = out_dir / RUN_MARKER
    if marker.is_file():  # a rewrite (a retry, the report job): one run per audit
        earlier = json.loads(marker.read_text())
        if earlier.get("run_id") and str(earlier.get("project_id")) == str(project.id):
            with contextlib.suppress(Exception):  # already gone
                ws.delete_run(project.id, earlier["run_id"])
    ref_ = ws.add_run(project.id, snapshot, name=f"audit {summary.id}")
    marker.write_text(json.dumps({"project_id": str(project.id), "run_id": str(ref_.id), "workspace": str(root)}))
    return EvidentlyRun(workspace=root, project_id=str(project.id), run_id=str(ref_.id), html=html, columns=names)


def drifted_in_run(workspace: Path, project_id: str, run_id: str) -> list[str]:
    """The concepts an audit's evidently run marks drifted (p-value below its threshold)."""
    from evidently.ui.workspace import Workspace

    model = Workspace.create(str(workspace)).get_run(project_id, run_id)
    if model is None:
        raise ValueError(f"no evidently run {run_id} in project {project_id} of {workspace}")
    out = []
    for result in model.metric_results.values():
        location = getattr(result, "metric_value_location", None)
        params = dict(location.metric.params) if location is not None else {}
        column, threshold = params.get("column"), params.get("threshold")
        if column is not None and threshold is not None and float(result.value) < float(threshold):
            out.append(column)
    return out
