"""The Grafana dashboards of t2c-monitor, written as data: ``python dashboards/build.py`` writes one JSON
file per dashboard next to this file (``tests/test_dashboards.py`` fails when a file differs from what
this writes, and runs every panel's SQL against a database an end-to-end run has filled).

Every panel reads the tables through the read-only role (``deploy/postgres/roles.sql``) and filters on
Grafana's time range (``$__timeFilter``) so that it stays fast on a year of data. The index that
serves each panel is named in its description:

* ``ix_image_monitor_id_created_at``: images by monitor and time (ingest rates, failures, scores);
* ``ix_batch_monitor_id_received_at``: batches by monitor and time (batch tables, stage timings);
* ``ix_audit_monitor_id_started_at``: audits by monitor and time, then ``audit_result``'s primary key
  (audit_id, concept_id) for their results;
* ``ix_alert_created_at``: alerts by time (each row names its monitor).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "t2c-postgres"}
MONITORS = "SELECT id FROM monitor WHERE name IN ($monitor)"  # the monitors chosen in the dashboard


@dataclass(frozen=True)
class Panel:
    """One panel: its SQL and the columns it returns, which the test checks against real rows."""

    title: str
    kind: str  # Grafana panel type: timeseries, table, barchart, stat, piechart
    sql: str
    columns: tuple[str, ...]
    description: str
    width: int = 12
    height: int = 8
    unit: str | None = None
    bars: bool = False  # a time series drawn as stacked bars (counts per audit or per bucket)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> str:
        return "time_series" if self.kind == "timeseries" else "table"


@dataclass(frozen=True)
class Variable:
    name: str
    query: str
    multi: bool = True


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = (Variable("monitor", "SELECT name FROM monitor ORDER BY name"),)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "schemaVersion": 39,
            "version": 1, "editable": True, "time": {"from": "now-7d", "to": "now"}, "refresh": "1m",
            "tags": ["t2c-monitor"],
            "templating": {"list": [_variable(v) for v in self.variables]},
            "panels": _laid_out(self.panels),
        }


def _variable(v: Variable) -> dict[str, Any]:
    return {"name": v.name, "label": v.name, "type": "query", "multi": v.multi, "includeAll": v.multi,
            "datasource": DATASOURCE, "query": v.query, "definition": v.query, "refresh": 2}


def _laid_out(panels: tuple[Panel, ...]) -> list[dict[str, Any]]:
    out, x, y, row_height = [], 0, 0, 0
    for i, p in enumerate(panels, start=1):
        if x + p.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panel: dict[str, Any] = {
            "id": i, "title": p.title, "type": p.kind, "description": p.description, "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": p.width, "h": p.height},
            "targets": [{"refId": "A", "datasource": DATASOURCE, "rawQuery": True, "editorMode": "code",
                         "format": p.format, "rawSql": p.sql}],
        }
        defaults: dict[str, Any] = {"unit": p.unit} if p.unit else {}
        if p.bars:
            defaults["custom"] = {"drawStyle": "bars", "fillOpacity": 80, "stacking": {"mode": "normal"}}
        if defaults:
            panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
        if p.options:
            panel["options"] = p.options
        out.append(panel)
        x, row_height = x + p.width, max(row_height, p.height)
    return out


DRIFT = Dashboard(
    uid="t2c-drift", title="t2c-monitor: drift overview",
    description="What changed, in words: each audit's KS statistics, flagged concepts, root causes and the "
                "words its drift direction decodes to.",
    panels=(
        Panel("KS statistic per concept (concepts flagged in the range)", "timeseries", f"""\
SELECT a.started_at AS "time", c.name AS metric, r.ks_stat AS value
FROM audit a JOIN audit_result r ON r.audit_id = a.id JOIN concept c ON c.id = r.concept_id
WHERE a.monitor_id IN ({MONITORS}) AND $__timeFilter(a.started_at) AND a.status = 'done'
  AND r.concept_id IN (
    SELECT r2.concept_id FROM audit a2 JOIN audit_result r2 ON r2.audit_id = a2.id
    WHERE a2.monitor_id IN ({MONITORS}) AND $__timeFilter(a2.started_at) AND r2.flagged)
ORDER BY 1""", ("time", "metric", "value"),
              "One line per concept flagged at least once in the range: its KS statistic in every audit. "
              "Index: ix_audit_monitor_id_started_at, then audit_result's primary key.", width=16),
        Panel("Concepts flagged per audit", "timeseries", f"""\
SELECT a.started_at AS "time", a.n_flagged AS flagged
FROM audit a WHERE a.monitor_id IN ({MONITORS}) AND $__timeFilter(a.started_at) AND a.status = 'done'
ORDER BY 1""", ("time", "flagged"),
              "How many concepts each audit flagged (q below the monitor's alpha). "
              "Index: ix_audit_monitor_id_started_at.", width=8, bars=True),
        Panel("Audits", "table", f"""\
SELECT a.started_at AS "time", m.name AS monitor, a.id AS audit, a.status, a.n_current AS images,
       a.n_flagged AS flagged,
       (SELECT string_agg(CASE WHEN (x->>'direction')::int > 0 THEN 'more ' ELSE 'less ' END || (x->>'name'), ', '
                          ORDER BY (x->>'share')::float DESC)
          FROM jsonb_array_elements(a.explanation->'roots') x) AS roots,
       (a.explanation->>'unlisted')::boolean AS unlisted_drift,
       coalesce(a.error, a.report_error) AS error
FROM audit a JOIN monitor m ON m.id = a.monitor_id
WHERE a.monitor_id IN ({MONITORS}) AND $__timeFilter(a.started_at)
ORDER BY a.started_at DESC LIMIT 100""",
              ("time", "monitor", "audit", "status", "images", "flagged", "roots", "unlisted_drift", "error"),
              "Every audit in the range, newest first: its root causes (echoes left out), whether part of the "
              "drift is named by no listed concept, and why it failed if it did. "
              "Index: ix_audit_monitor_id_started_at.", width=24),
        Panel("Root causes and their echoes", "table", f"""\
SELECT a.started_at AS "time", a.id AS audit, x->>'name' AS root,
       CASE WHEN (x->>'direction')::int > 0 THEN 'more' ELSE 'less' END AS direction,
       round(((x->>'share')::float * 100)::numeric, 1) AS share_percent,
       (SELECT string_agg(e, ', ') FROM jsonb_array_elements_text(x->'echoes') e) AS echoes
FROM audit a CROSS JOIN LATERAL jsonb_array_elements(a.explanation->'roots') x
WHERE a.monitor_id IN ({MONITORS}) AND $__timeFilter(a.started_at)
ORDER BY a.started_at DESC, (x->>'share')::float DESC LIMIT 100""",
              ("time", "audit", "root", "direction", "share_percent", "echoes"),
              "The flagged concepts that explain the shift (share: how much of it each explains) and the "
              "flagged concepts that only move with them. Index: ix_audit_monitor_id_started_at.", width=12),
        Panel("Decoded words", "table", f"""\
SELECT a.started_at AS "time", a.id AS audit,
       (SELECT string_agg(w, ', ') FROM jsonb_array_elements_text(a.explanation->'words'->'grew') w) AS more_of,
       (SELECT string_agg(w, ', ') FROM jsonb_array_elements_text(a.explanation->'words'->'shrank') w) AS less_of,
       (SELECT string_agg(w, ', ') FROM jsonb_array_elements_text(a.explanation->'words'->'unlisted') w)
         AS unlisted,
       a.explanation->'words'->>'sentence' AS sentence
FROM audit a
WHERE a.monitor_id IN ({MONITORS}) AND $__timeFilter(a.started_at)
  AND jsonb_typeof(a.explanation->'words') = 'object'
ORDER BY a.started_at DESC LIMIT 100""", ("time", "audit", "more_of", "less_of", "unlisted", "sentence"),
              "The drift direction of each audit decoded to text (concept-to-text): words of what there is "
              "more and less of, and what the drift no listed concept names adds. "
              "Index: ix_audit_monitor_id_started_at.", width=12),
    ),
)

INGEST = Dashboard(
    uid="t2c-ingest", title="t2c-monitor: ingest health",
    description="Batches, images per minute, why images failed and where the time goes.",
    panels=(
        Panel("Time since each monitor's newest batch", "stat", f"""\
SELECT m.name AS metric, extract(epoch FROM now() - max(b.received_at)) AS value
FROM monitor m JOIN batch b ON b.monitor_id = m.id AND b.status = 'stored'
WHERE m.id IN ({MONITORS})
GROUP BY m.name ORDER BY 2 DESC""", ("metric", "value"),
              "How long ago each monitor last stored a batch, whatever the time range: a feed that stopped shows "
              "here first (and `alerts: {no_data_after: 1d}` alerts on it). Index: ix_batch_monitor_id_received_at.",
              width=24, height=4, unit="s",
              options={"reduceOptions": {"values": True, "calcs": ["lastNotNull"], "fields": "/^value$/"},
                       "textMode": "value_and_name"}),
        Panel("Images per minute (ok / failed)", "timeseries", f"""\
SELECT $__timeGroupAlias(created_at, $__interval), status AS metric,
       count(*) * 60000.0 / $__interval_ms AS value
FROM image WHERE monitor_id IN ({MONITORS}) AND $__timeFilter(created_at)
GROUP BY 1, 2 ORDER BY 1""", ("time", "metric", "value"),
              "Images stored per minute, averaged over each bucket of the graph. "
              "Index: ix_image_monitor_id_created_at.", width=16),
        Panel("Batches by status", "piechart", f"""\
SELECT status AS metric, count(*) AS value
FROM batch WHERE monitor_id IN ({MONITORS}) AND $__timeFilter(received_at)
GROUP BY 1 ORDER BY 2 DESC""", ("metric", "value"),
              "stored: done; pending or embedding: a run is at it or was killed (the next run resumes it); "
              "failed: see the batch's error. Index: ix_batch_monitor_id_received_at.", width=8),
        Panel("Why images failed", "barchart", f"""\
SELECT split_part(failure_reason, ':', 1) AS reason, count(*) AS images
FROM image
WHERE monitor_id IN ({MONITORS}) AND $__timeFilter(created_at) AND status = 'failed'
GROUP BY 1 ORDER BY 2 DESC LIMIT 20""", ("reason", "images"),
              "Failed images by the first part of their recorded reason. Index: ix_image_monitor_id_created_at.",
              width=12, options={"xField": "reason", "orientation": "horizontal"}),
        Panel("Stage timings per batch", "timeseries", f"""\
SELECT coalesce(b.finished_at, b.received_at) AS "time", t.key AS metric, t.value::float AS value
FROM batch b CROSS JOIN LATERAL jsonb_each_text(b.timings) t
WHERE b.monitor_id IN ({MONITORS}) AND $__timeFilter(b.received_at) AND t.key <> 'total'
ORDER BY 1""", ("time", "metric", "value"),
              "Seconds each stage took per batch (decode, encode, align and score, store). "
              "Index: ix_batch_monitor_id_received_at.", width=12, unit="s"),
        Panel("Batches", "table", f"""\
SELECT b.received_at AS "time", m.name AS monitor, b.external_id AS batch, b.status, b.n_ok AS ok,
       b.n_failed AS failed, round((b.timings->>'total')::numeric, 2) AS seconds,
       round((b.n_ok / nullif((b.timings->>'total')::float, 0))::numeric, 1) AS images_per_second, b.error
FROM batch b JOIN monitor m ON m.id = b.monitor_id
WHERE b.monitor_id IN ({MONITORS}) AND $__timeFilter(b.received_at)
ORDER BY b.received_at DESC LIMIT 100""",
              ("time", "monitor", "batch", "status", "ok", "failed", "seconds", "images_per_second", "error"),
              "The latest batches, newest first. Index: ix_batch_monitor_id_received_at.", width=24),
    ),
)

ALERTS = Dashboard(
    uid="t2c-alerts", title="t2c-monitor: alerts",
    description="Alerts sent, held back (the same drift already alerted) and failed (kept, sent again later); "
                "drift alerts of audits and no-data alerts of monitors that stored nothing for too long.",
    panels=(
        Panel("Alerts by outcome", "timeseries", f"""\
SELECT $__timeGroupAlias(al.created_at, $__interval), al.status AS metric, count(*) AS value
FROM alert al
WHERE $__timeFilter(al.created_at) AND al.monitor_id IN ({MONITORS})
GROUP BY 1, 2 ORDER BY 1""", ("time", "metric", "value"),
              "sent; suppressed: held back, the same drift was alerted in the quiet period; failed: every "
              "attempt failed, `t2c alerts retry` or the next audit sends it again; pending: being sent. "
              "Index: ix_alert_created_at.", width=16, bars=True),
        Panel("Outcomes in the range", "stat", f"""\
SELECT al.status AS metric, count(*) AS value
FROM alert al
WHERE $__timeFilter(al.created_at) AND al.monitor_id IN ({MONITORS})
GROUP BY 1 ORDER BY 1""", ("metric", "value"),
              "Alerts per outcome in the range. Index: ix_alert_created_at.", width=8,
              options={"reduceOptions": {"values": True, "calcs": ["lastNotNull"], "fields": "/^value$/"},
                       "textMode": "value_and_name"}),
        Panel("Alerts", "table", f"""\
SELECT al.created_at AS "time", m.name AS monitor, al.kind, al.audit_id AS audit, al.channel, al.status,
       al.attempts, al.sent_at, al.payload->>'subject' AS subject, al.last_error
FROM alert al JOIN monitor m ON m.id = al.monitor_id
WHERE $__timeFilter(al.created_at) AND al.monitor_id IN ({MONITORS})
ORDER BY al.created_at DESC LIMIT 100""",
              ("time", "monitor", "kind", "audit", "channel", "status", "attempts", "sent_at", "subject",
               "last_error"),
              "Every alert, newest first: its channel (never the secret), attempts, and the last error of a "
              "failed one. Index: ix_alert_created_at.", width=24),
    ),
)

_CONCEPT_SCORES = f"""\
FROM image i JOIN batch b ON b.id = i.batch_id
  JOIN concept c ON c.bank_id = b.bank_id AND c.name = '$concept'
WHERE i.monitor_id IN ({MONITORS}) AND $__timeFilter(i.created_at) AND i.status = 'ok'"""

_BASELINE_SCORES = f"""\
FROM baseline bl JOIN concept c ON c.bank_id = bl.bank_id AND c.name = '$concept'
  JOIN baseline_concept bc ON bc.baseline_id = bl.id AND bc.concept_id = c.id
  CROSS JOIN LATERAL unnest(bc.scores) AS s(score)
WHERE bl.monitor_id IN ({MONITORS}) AND bl.active"""

CONCEPTS = Dashboard(
    uid="t2c-concepts", title="t2c-monitor: concept explorer",
    description="One concept's score distribution over time, against the active baseline's.",
    variables=(
        Variable("monitor", "SELECT name FROM monitor ORDER BY name", multi=False),
        Variable("concept", "SELECT c.name FROM concept c JOIN monitor m ON m.bank_id = c.bank_id "
                            "WHERE m.name IN ($monitor) ORDER BY c.position", multi=False),
    ),
    panels=(
        Panel("Score quantiles over time", "timeseries", f"""\
SELECT $__timeGroupAlias(i.created_at, $__interval),
       percentile_cont(0.1) WITHIN GROUP (ORDER BY i.scores[c.position + 1]) AS p10,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY i.scores[c.position + 1]) AS median,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY i.scores[c.position + 1]) AS p90
{_CONCEPT_SCORES}
GROUP BY 1 ORDER BY 1""", ("time", "p10", "median", "p90"),
              "The concept's score (cosine of the aligned image vector with the concept's text vector) over "
              "the images of each bucket: 10th, 50th and 90th percentile. Scores are read in the bank each "
              "batch was scored with. Index: ix_image_monitor_id_created_at.", width=16),
        Panel("Baseline and range", "table", f"""\
SELECT 'baseline' AS sample, count(*) AS images,
       percentile_cont(0.1) WITHIN GROUP (ORDER BY s.score) AS p10,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s.score) AS median,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY s.score) AS p90
{_BASELINE_SCORES}
UNION ALL
SELECT 'range', count(*),
       percentile_cont(0.1) WITHIN GROUP (ORDER BY i.scores[c.position + 1]),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY i.scores[c.position + 1]),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY i.scores[c.position + 1])
{_CONCEPT_SCORES}""", ("sample", "images", "p10", "median", "p90"),
              "The same quantiles in the active baseline's sample and in the whole range.", width=8),
        Panel("Score histogram: baseline against the range", "barchart", f"""\
WITH range AS (SELECT i.scores[c.position + 1] AS score
{_CONCEPT_SCORES}),
baseline AS (SELECT s.score
{_BASELINE_SCORES}),
bounds AS (SELECT least(min(score), (SELECT min(score) FROM baseline)) AS lo,
                  greatest(max(score), (SELECT max(score) FROM baseline)) + 1e-6 AS hi FROM range),
bins AS (SELECT g AS bin FROM generate_series(1, 20) g)
SELECT to_char(lo + (bin - 0.5) * (hi - lo) / 20, 'FM0.000') AS score,
       100.0 * (SELECT count(*) FROM baseline WHERE width_bucket(score, lo, hi, 20) = bin)
         / greatest((SELECT count(*) FROM baseline), 1) AS baseline_percent,
       100.0 * (SELECT count(*) FROM range WHERE width_bucket(score, lo, hi, 20) = bin)
         / greatest((SELECT count(*) FROM range), 1) AS range_percent
FROM bins CROSS JOIN bounds WHERE lo IS NOT NULL ORDER BY bin""", ("score", "baseline_percent", "range_percent"),
              "Share of images per score bin (20 bins over both samples' range): where the two differ is "
              "what the KS test measures.", width=12, options={"xField": "score"}),
        Panel("KS statistic of the concept", "timeseries", f"""\
SELECT a.started_at AS "time", r.ks_stat AS ks_statistic, r.flagged::int AS flagged
FROM audit a JOIN audit_result r ON r.audit_id = a.id JOIN concept c ON c.id = r.concept_id
WHERE a.monitor_id IN ({MONITORS}) AND $__timeFilter(a.started_at) AND c.name = '$concept'
ORDER BY 1""", ("time", "ks_statistic", "flagged"),
              "The concept's KS statistic in every audit (flagged: 1). "
              "Index: ix_audit_monitor_id_started_at, then audit_result's primary key.", width=12),
    ),
)

DASHBOARDS = (DRIFT, INGEST, ALERTS, CONCEPTS)


def render(dashboard: Dashboard) -> str:
    return json.dumps(dashboard.to_dict(), indent=2) + "\n"


def main() -> None:
    for old in HERE.glob("t2c-*.json"):
        if old.stem not in {d.uid for d in DASHBOARDS}:
            old.unlink()
    for dashboard in DASHBOARDS:
        (HERE / f"{dashboard.uid}.json").write_text(render(dashboard))


if __name__ == "__main__":
    main()
