"""The periodic report job (the ``decode_report`` flow, ``t2c report digest``): words and reports for
the audits that lack them, and a digest of the period that alert channels can receive."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from t2c_monitor.errors import T2CError
from t2c_monitor.reports.digest import Digest, DigestFiles, period_digest, write_digest
from t2c_monitor.store import Database


@dataclass(frozen=True)
class ReportJobResult:
    monitor: str
    refreshed: list[int] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    digest: Digest | None = None
    files: DigestFiles | None = None
    sent: list[str] = field(default_factory=list)  # "channel: sent" / "channel: failed (why)"

    def to_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "refreshed": self.refreshed, "failures": [list(f) for f in self.failures],
                "digest": self.digest.to_dict() if self.digest else None,
                "html": str(self.files.html) if self.files else None,
                "markdown": str(self.files.markdown) if self.files else None, "sent": self.sent}


def refresh_reports(db: Database, monitor: str, report_dir: Path, *, log: Any = lambda _: None
                    ) -> tuple[list[int], list[tuple[int, str]]]:
    """Decode every audit of ``monitor`` that found a shift but has no words, and write every report
    that is missing (never written, or its writing failed); a report that still cannot be written is
    recorded on its audit again, for the next run."""
    from t2c_monitor.audit import load_audit, record_report_failure, refresh_report
    from t2c_monitor.store.audits import audits_to_refresh
    from t2c_monitor.store.monitors import get_monitor

    with db.session() as session:
        record = get_monitor(session, monitor)
    with db.engine.connect() as conn:
        pending = audits_to_refresh(conn, record.id)
    refreshed, failures = [], []
    for audit_id in pending:
        try:
            refresh_report(db, monitor, audit_id, report_dir)
        except OSError as exc:
            summary = record_report_failure(db, load_audit(db, monitor, audit_id).summary, exc)
            failures.append((audit_id, summary.report_error or str(exc)))
            log(f"audit {audit_id}: report not written ({summary.report_error})")
            continue
        except T2CError as exc:  # e.g. an audit of an earlier bank: said in the digest, never fatal
            failures.append((audit_id, str(exc)))
            log(f"audit {audit_id}: {exc}")
            continue
        refreshed.append(audit_id)
        log(f"audit {audit_id}: words and report written")
    return refreshed, failures


def send_digest(db: Database, monitor: str, files: DigestFiles, digest: Digest) -> list[str]:
    """Send the digest's Markdown to the monitor's alert channels (when ``alerts.digest`` is on)."""
    from t2c_monitor.alerts import AlertMessage, create_sender, redact
    from t2c_monitor.store.monitors import get_monitor

    with db.session() as session:
        config = get_monitor(session, monitor).config.alerts
    if not config.digest:
        return []
    message = AlertMessage(subject=digest.subject, text=files.text,
                           payload={"subject": digest.subject, "text": files.text, "monitor": monitor,
                                    "digest": digest.to_dict(), "report": str(files.html)})
    outcomes = []
    for channel in config.resolved_channels():
        sender = create_sender(channel)
        try:
            sender.send(message)
            outcomes.append(f"{sender.name}: sent")
        except Exception as exc:  # noqa: BLE001 - a digest that cannot be sent is said, never fatal
            outcomes.append(f"{sender.name}: failed ({redact(str(exc), sender.secrets())})")
    return outcomes


def run_report_job(db: Database, monitor: str, report_dir: Path, *, since: datetime | None = None,
                   until: datetime | None = None, period: timedelta = timedelta(hours=24), send: bool = True,
                   refresh: bool = True, log: Any = lambda _: None) -> ReportJobResult:
    """Refresh what is missing (``refresh``), then write the digest of [since, until) (default: the
    ``period`` before now) and send it to the channels that take digests (``send``)."""
    until = until or datetime.now(UTC)
    since = since or until - period
    refreshed, failures = refresh_reports(db, monitor, report_dir, log=log) if refresh else ([], [])
    digest = period_digest(db, monitor, since, until, refreshed=refreshed, report_failures=failures)
    files = write_digest(report_dir, digest)
    sent = send_digest(db, monitor, files, digest) if send else []
    return ReportJobResult(monitor=monitor, refreshed=refreshed, failures=failures, digest=digest, files=files,
                           sent=sent)
