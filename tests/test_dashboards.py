"""Every dashboard query runs against the migrated schema, so dashboards cannot drift from migrations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import text

DASHBOARDS = sorted((Path(__file__).resolve().parents[1] / "dashboards").glob("*.json"))


def grafana_to_sql(sql: str) -> str:
    """Expand the Grafana macros our dashboards use into the SQL Grafana would send."""
    sql = re.sub(r"\$__timeGroupAlias\((\w+(?:\.\w+)?),\s*'1h'\)",
                 lambda m: f"date_trunc('hour', {m.group(1)}) AS \"time\"", sql)
    sql = re.sub(r"\$__timeFilter\((\w+(?:\.\w+)?)\)", r"\1 BETWEEN now() - interval '7 days' AND now()", sql)
    return sql.replace("$monitor", "'shapes'")


def test_there_are_dashboards():
    assert DASHBOARDS, "dashboards/*.json missing"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_query_runs(engine, path):
    dashboard = json.loads(path.read_text())
    queries = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert queries
    with engine.connect() as conn:
        for sql in queries:
            expanded = grafana_to_sql(sql)
            assert "$" not in expanded, f"unexpanded macro in {path.name}: {sql}"
            conn.execute(text(expanded)).all()
