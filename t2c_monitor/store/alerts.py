"""Alerts and reports of audits: one alert row per audit and channel, its attempts and outcome.

Rows name the channel, never its secret; ``payload`` is the message exactly as sent, so a failed
alert is retried with the same content.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, text

from t2c_monitor.store.models import AlertStatus


def insert_alert(conn: Connection, *, audit_id: int, channel: str, payload: dict[str, Any], status: AlertStatus,
                 last_error: str | None = None) -> int:
    return int(conn.execute(
        text("INSERT INTO alert (audit_id, channel, payload, status, last_error) "
             "VALUES (:a, :c, CAST(:p AS jsonb), :s, :e) RETURNING id"),
        {"a": audit_id, "c": channel, "p": json.dumps(payload), "s": status, "e": last_error},
    ).scalar_one())


def record_attempt(conn: Connection, alert_id: int, *, sent: bool, error: str | None) -> None:
    """Count one send attempt: ``sent`` marks it delivered, otherwise failed with ``error``."""
    conn.execute(
        text("UPDATE alert SET attempts = attempts + 1, status = :s, last_error = :e, "
             "sent_at = CASE WHEN :sent THEN now() ELSE sent_at END WHERE id = :id"),
        {"id": alert_id, "s": "sent" if sent else "failed", "e": error, "sent": sent},
    )


def recent_alerts(conn: Connection, monitor_id: int, channel: str, since: timedelta) -> list[dict[str, Any]]:
    """Alerts of the monitor on ``channel`` that were sent, or are still being delivered, within ``since``."""
    rows = conn.execute(
        text("SELECT al.id, al.audit_id, al.status, al.payload, al.created_at FROM alert al "
             "JOIN audit a ON a.id = al.audit_id WHERE a.monitor_id = :m AND al.channel = :c "
             "AND al.status IN ('sent', 'pending', 'failed') AND al.created_at >= now() - :since "
             "ORDER BY al.created_at DESC"),
        {"m": monitor_id, "c": channel, "since": since},
    ).mappings().all()
    return [dict(r) for r in rows]


def failed_alerts(conn: Connection, monitor_id: int | None = None) -> list[dict[str, Any]]:
    """Alerts whose delivery failed (oldest first), of one monitor or all."""
    sql = ("SELECT al.id, al.audit_id, al.channel, al.payload, al.attempts, m.name AS monitor FROM alert al "
           "JOIN audit a ON a.id = al.audit_id JOIN monitor m ON m.id = a.monitor_id WHERE al.status = 'failed'")
    params: dict[str, Any] = {}
    if monitor_id is not None:
        sql += " AND a.monitor_id = :m"
        params["m"] = monitor_id
    return [dict(r) for r in conn.execute(text(sql + " ORDER BY al.id"), params).mappings().all()]


def list_alerts(conn: Connection, monitor_id: int, *, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute(
        text("SELECT al.id, al.audit_id, al.channel, al.status, al.attempts, al.last_error, al.created_at, "
             "al.sent_at, jsonb_array_length(al.payload->'flagged') AS n_flagged FROM alert al "
             "JOIN audit a ON a.id = al.audit_id WHERE a.monitor_id = :m ORDER BY al.id DESC LIMIT :limit"),
        {"m": monitor_id, "limit": limit}).mappings().all()
    return [dict(r) for r in rows]


def insert_report(conn: Connection, *, audit_id: int, path: str) -> int:
    """Record an audit's report; writing the same report again (a retried task) keeps one row."""
    conn.execute(text("DELETE FROM report WHERE audit_id = :a AND path = :p"), {"a": audit_id, "p": path})
    return int(conn.execute(
        text("INSERT INTO report (audit_id, path) VALUES (:a, :p) RETURNING id"), {"a": audit_id, "p": path}
    ).scalar_one())


def image_uris(conn: Connection, image_ids: list[int]) -> dict[int, str]:
    rows = conn.execute(text("SELECT id, uri FROM image WHERE id = ANY(:ids)"), {"ids": list(image_ids)}).all()
    return {int(r.id): str(r.uri) for r in rows}
