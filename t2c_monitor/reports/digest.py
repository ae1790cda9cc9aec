"""A digest of a monitor's period: its audits with their roots and words, its alerts, its ingest health.

``period_digest`` reads the period from the store and ``write_digest`` renders it as one HTML page
and a Markdown text (what alert channels receive), both under ``<reports>/<monitor>/digests/``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from t2c_monitor.reports.render import render, write_atomically


@dataclass(frozen=True)
class DigestAudit:
    id: int
    status: str
    started_at: datetime
    batches: list[str]
    n_current: int
    roots: list[str]  # "more 'grass'"
    flagged: int
    words: str
    unlisted: bool
    error: str | None
    report: str | None

    @property
    def outcome(self) -> str:
        """What the audit found, in a phrase."""
        if self.status != "done":
            return f"{self.status}: {self.error}" if self.error else self.status
        parts = []
        if self.roots:
            more = self.flagged - len(self.roots)
            parts.append(", ".join(self.roots) + (f" ({more} more flagged, moving with them)" if more > 0 else ""))
        if self.unlisted:
            parts.append("a shift no concept names")
        if not parts and self.flagged:
            parts.append(f"{self.flagged} concept{'s' if self.flagged != 1 else ''} flagged")
        return "; ".join(parts) or "no shift"


@dataclass(frozen=True)
class Digest:
    monitor: str
    since: datetime
    until: datetime
    audits: list[DigestAudit] = field(default_factory=list)
    alerts: dict[str, int] = field(default_factory=dict)  # status -> count
    batches: dict[str, int] = field(default_factory=dict)  # status -> count
    images_ok: int = 0
    images_failed: int = 0
    failure_reasons: list[tuple[str, int]] = field(default_factory=list)
    refreshed: list[int] = field(default_factory=list)  # audits the report job decoded or re-reported
    report_failures: list[tuple[int, str]] = field(default_factory=list)

    @property
    def subject(self) -> str:
        shifted = sum(1 for a in self.audits if a.roots or a.unlisted or a.flagged)
        return (f"[t2c] {self.monitor}: {len(self.audits)} audit{'s' if len(self.audits) != 1 else ''} since "
                f"{self.since:%Y-%m-%d %H:%M %Z}, {shifted} with a shift")

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        for key in ("since", "until"):
            out[key] = out[key].isoformat()
        for audit in out["audits"]:
            audit["started_at"] = audit["started_at"].isoformat()
        return out


@dataclass(frozen=True)
class DigestFiles:
    html: Path
    markdown: Path
    text: str  # the Markdown, as channels receive it


def period_digest(db: Any, monitor: str, since: datetime, until: datetime, *, refreshed: list[int] | None = None,
                  report_failures: list[tuple[int, str]] | None = None) -> Digest:
    """What happened to ``monitor`` in [``since``, ``until``)."""
    from t2c_monitor.decode.drift import DriftWords
    from t2c_monitor.store import digest as digest_store
    from t2c_monitor.store.monitors import get_monitor
    from t2c_monitor.wording import concept_change

    with db.session() as session:
        record = get_monitor(session, monitor)
    with db.engine.connect() as conn:
        audits = digest_store.audits_between(conn, record.id, since, until)
        alerts = digest_store.alert_counts(conn, record.id, since, until)
        batches = digest_store.batch_counts(conn, record.id, since, until)
        images = digest_store.image_counts(conn, record.id, since, until)
        reasons = digest_store.failure_reasons(conn, record.id, since, until)
    rows = []
    for a in audits:
        explanation = a.explanation or {}
        flagged = {f["name"]: f["direction"] for f in a.flagged}
        roots = [concept_change(r["name"], r["direction"], quoted=True) for r in explanation.get("roots", [])]
        words = DriftWords.from_dict(explanation.get("words"))
        rows.append(DigestAudit(id=a.id, status=a.status, started_at=a.started_at, batches=a.batches,
                                n_current=a.n_current, roots=roots, flagged=len(flagged),
                                words=words.text() if words else "", unlisted=bool(explanation.get("unlisted")),
                                error=a.error, report=a.report))
    return Digest(monitor=monitor, since=since, until=until, audits=rows, alerts=alerts, batches=batches,
                  images_ok=images.get("ok", 0), images_failed=images.get("failed", 0),
                  failure_reasons=Counter(dict(reasons)).most_common(5), refreshed=list(refreshed or []),
                  report_failures=list(report_failures or []))


def write_digest(report_dir: Path, digest: Digest) -> DigestFiles:
    """Write the digest's page and Markdown (each whole or not at all)."""
    stem = Path(report_dir) / digest.monitor / "digests" / f"digest-{digest.until:%Y%m%dT%H%M%S}"
    text = render("digest.md.j2", digest=digest)
    html = write_atomically(stem.with_suffix(".html"), render("digest.html.j2", digest=digest))
    markdown = write_atomically(stem.with_suffix(".md"), text)
    return DigestFiles(html=html, markdown=markdown, text=text)
