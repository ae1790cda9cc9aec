"""Alerts and reports of audits: one alert row per audit (or, for ``no_data`` alerts, per monitor check) and
channel, its attempts and outcome.

Rows name the channel, never its secret; ``payload`` is the message exactly as sent, so a failed
alert is retried with the same content. Queries are SQLAlchemy expressions on the typed models
and return dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from t2c_monitor.store.models import Alert, AlertKind, AlertStatus, Audit, Image, Monitor, Report


@dataclass(frozen=True)
class AlertRow:
    """One alert as the store keeps it."""

    id: int
    audit_id: int | None  # None for a no_data alert
    kind: str  # drift or no_data
    channel: str
    status: AlertStatus
    attempts: int
    payload: dict[str, Any]
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    monitor: str

    @property
    def n_flagged(self) -> int:
        return len(self.payload.get("flagged", []))

    def to_dict(self) -> dict[str, Any]:
        """The row as `t2c alerts list --json` shows it (the payload is summarised by its count)."""
        out = {k: v for k, v in asdict(self).items() if k != "payload"}
        return {**out, "n_flagged": self.n_flagged}


_ALERT_COLUMNS = (Alert.id, Alert.audit_id, Alert.kind, Alert.channel, Alert.status, Alert.attempts, Alert.payload,
                  Alert.last_error, Alert.created_at, Alert.sent_at, Monitor.name.label("monitor"))


def _alerts(conn: Connection, *where: Any, newest_first: bool = False, limit: int | None = None) -> list[AlertRow]:
    query = (select(*_ALERT_COLUMNS).join(Monitor, Monitor.id == Alert.monitor_id)
             .where(*where).order_by(Alert.id.desc() if newest_first else Alert.id).limit(limit))
    return [AlertRow(**row._mapping) for row in conn.execute(query)]


def insert_alert(conn: Connection, *, monitor_id: int, audit_id: int | None, channel: str, payload: dict[str, Any],
                 status: AlertStatus, kind: AlertKind = "drift", last_error: str | None = None) -> int:
    return int(conn.execute(insert(Alert).values(
        monitor_id=monitor_id, audit_id=audit_id, kind=kind, channel=channel, payload=payload, status=status,
        last_error=last_error).returning(Alert.id)).scalar_one())


def record_attempt(conn: Connection, alert_id: int, *, sent: bool, error: str | None) -> None:
    """Count one send attempt: ``sent`` marks it delivered (keeping the error of the attempt before, if
    any: "sent on attempt 2, after a timeout"), otherwise failed with ``error``."""
    values: dict[str, Any] = {"attempts": Alert.attempts + 1, "status": "sent" if sent else "failed"}
    if sent:
        values["sent_at"] = func.now()
    else:
        values["last_error"] = error
    conn.execute(update(Alert).where(Alert.id == alert_id).values(**values))


def recent_alerts(conn: Connection, monitor_id: int, channel: str, since: timedelta, *,
                  kind: AlertKind = "drift") -> list[AlertRow]:
    """Alerts of the monitor of ``kind`` on ``channel`` that were sent, or are still being delivered, within
    ``since``; newest first."""
    return _alerts(conn, Alert.monitor_id == monitor_id, Alert.channel == channel, Alert.kind == kind,
                   Alert.status.in_(("sent", "pending", "failed")), Alert.created_at >= func.now() - since,
                   newest_first=True)


def failed_alerts(conn: Connection, monitor_id: int | None = None) -> list[AlertRow]:
    """Alerts whose delivery failed (oldest first), of one monitor or all."""
    where = [Alert.status == "failed"] + ([Alert.monitor_id == monitor_id] if monitor_id is not None else [])
    return _alerts(conn, *where)


def list_alerts(conn: Connection, monitor_id: int, *, limit: int = 50) -> list[AlertRow]:
    """The monitor's latest alerts, newest first."""
    return _alerts(conn, Alert.monitor_id == monitor_id, newest_first=True, limit=limit)


def insert_report(conn: Connection, *, audit_id: int, path: str) -> int:
    """Record an audit's report (and clear any earlier failure to write it); writing the same report
    again (a retried task, the report job) keeps one row."""
    conn.execute(delete(Report).where(Report.audit_id == audit_id, Report.path == path))
    conn.execute(update(Audit).where(Audit.id == audit_id).values(report_error=None))
    return int(conn.execute(insert(Report).values(audit_id=audit_id, path=path).returning(Report.id)).scalar_one())


def set_report_error(conn: Connection, *, audit_id: int, error: str) -> None:
    """Record why an audit's report could not be written (the report job writes it later)."""
    conn.execute(update(Audit).where(Audit.id == audit_id).values(report_error=error[:4000]))


def image_meta(conn: Connection, image_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The metadata (manifest columns) of images, by id."""
    rows = conn.execute(select(Image.id, Image.meta).where(Image.id.in_(list(image_ids))))
    return {int(r.id): dict(r.meta or {}) for r in rows}


def image_uris(conn: Connection, image_ids: list[int]) -> dict[int, str]:
    rows = conn.execute(select(Image.id, Image.uri).where(Image.id.in_(list(image_ids))))
    return {int(r.id): str(r.uri) for r in rows}
