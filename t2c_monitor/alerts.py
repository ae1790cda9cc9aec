"""Alerts: tell people which concepts shifted, on the channels a monitor names.

A channel (see ``channels.WebhookChannel`` and friends) is one of

* ``webhook``: the message as JSON POSTed to a URL held in an environment variable or a Prefect
  ``Secret`` block, resolved only at send time;
* ``prefect_block``: any saved Prefect notification block (Slack, Microsoft Teams, custom
  webhook, PagerDuty, ...), whose ``notify(body, subject)`` sends the Markdown digest;
* ``email``: through prefect-email's ``EmailServerCredentials`` block;
* ``file``: one JSON line per alert appended to a local file.

``deliver_alerts`` sends one audit's message to each channel, unless the same drift was already
alerted on that channel within the quiet period, in which case the alert is recorded as
``suppressed``. A drift is the same when its leading root cause (same direction) was flagged in an
earlier alert: concepts are correlated, so an ongoing shift drags a changing tail of echoes along
(more grass backgrounds, hence fewer gray ones), and paging again for each would be crying wolf; a
new root is news and is sent. The message leads with the roots, each with the concepts that move
with it, then the shift in words and any shift that no concept names. Each send is tried ``1 +
retries`` times with doubling waits; every attempt is counted on the alert row, and a send that
still fails is kept ``failed`` with its (redacted) error for ``retry_failed_alerts`` (run at the
start of every audit flow and by ``t2c alerts retry``). The audit is stored before any alert is
attempted, so a failed send never loses it. Secrets are never logged, stored or sent: rows name the
channel only, and error texts are scrubbed of the secret and of any URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from t2c_monitor import redaction
from t2c_monitor.channels import BlockChannel, EmailChannel, FileChannel, WebhookChannel
from t2c_monitor.durations import format_duration
from t2c_monitor.errors import ConfigError, T2CError
from t2c_monitor.monitors import AlertsConfig
from t2c_monitor.store import Database
from t2c_monitor.store import alerts as alert_store
from t2c_monitor.store.alerts import AlertRow
from t2c_monitor.store.models import AlertKind, AlertStatus
from t2c_monitor.wording import change_word, concept_change, elapsed

MAX_RETRY_DELAY_S = 300.0
_USERINFO = re.compile(r"(://)[^/@\s]+@")


class AlertSendError(T2CError):
    """A channel could not deliver an alert (the message says why, without secrets)."""


def redact(message: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``message`` without the given secrets, without any URL (a webhook's path is often its token) and with
    every DSN ``password=...`` masked (``redaction.redact``)."""
    message = redaction.without_urls(message)
    for secret in secrets:
        if secret:
            message = message.replace(secret, "<secret>")
    return redaction.redact(message)


# --------------------------------------------------------------------------------------------
# The message


@dataclass(frozen=True)
class AlertMessage:
    subject: str
    text: str
    payload: dict[str, Any]  # what webhooks receive and the alert row stores; includes subject and text

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> AlertMessage:
        return cls(subject=payload["subject"], text=payload["text"], payload=payload)

    @property
    def key(self) -> str | None:
        """The idempotency key of this alert (the same on every attempt to deliver it)."""
        return self.payload.get("idempotency_key")

    def keyed(self, alert_id: int, channel: str) -> AlertMessage:
        """This message carrying the idempotency key of alert row ``alert_id`` (see ``idempotency_key``)."""
        key = idempotency_key(self.payload.get("monitor", ""), self.payload.get("audit_id"), channel, alert_id)
        return AlertMessage(self.subject, self.text, self.payload | {"idempotency_key": key})


def idempotency_key(monitor: str, audit_id: Any, channel: str, alert_id: int) -> str:
    """One key per alert row, identical on every attempt (retries, `t2c alerts retry`): a receiver that
    saw a key drops the repeat that a timeout after delivery causes. A hash, so it carries no names."""
    digest = hashlib.sha256(f"{monitor}\0{audit_id}\0{channel}\0{alert_id}".encode()).hexdigest()
    return f"t2c-{digest[:32]}"


def _concept_line(f: dict[str, Any]) -> str:
    size = f"{f['effect_size']:+.2f} SD, " if f.get("effect_size") is not None else ""
    return (f"{f['rank']}. {f['name']}: {change_word(f['direction'])} "
            f"(KS {f['ks_stat']:.3f}, q {f['q_value']:.2g}, mean score {f['mean_ref']:.4f} -> "
            f"{f['mean_cur']:.4f}, {size}{f['n_current']} images)")


_CHAT_SEQUENCE = re.compile(r"<(?=[!@#]|[a-z][a-z0-9+.-]*:)", re.IGNORECASE)


def chat_safe(text: str) -> str:
    """``text`` as chat services that read our plain ``text`` field (a Slack incoming webhook takes this very
    JSON) show it, with no sequence a concept or batch name could use to ping people or hide a link:
    ``<!channel>``, ``<@U1>``, ``<http://x|click>`` start with ``&lt;`` (which Slack shows as ``<``), and
    ``@everyone``/``@here`` get a zero-width space."""
    text = _CHAT_SEQUENCE.sub("&lt;", text)
    return re.sub(r"(?<![\w.])@(everyone|here|channel)\b", "@\u200b\\1", text)


def _subject(summary: Any, flagged: list[dict[str, Any]], roots: list[dict[str, Any]]) -> str:
    words = summary.words.text() if summary.words else ""
    if roots:
        lead = ", ".join(concept_change(r["name"], r["direction"], countable=True, quoted=True) for r in roots[:2])
        more = len(flagged) - min(len(roots), 2)
        pronoun = "it" if len(roots) == 1 else "them"
        what = lead + (f" (+{more} moving with {pronoun})" if more > 0 else "")
    elif summary.unlisted:
        what = "a shift no concept names" + (f" ({len(flagged)} concept{'s' if len(flagged) != 1 else ''} "
                                            "flagged, none its cause)" if flagged else "")
    else:
        what = f"{len(flagged)} concept{'s' if len(flagged) != 1 else ''} shifted"
    if summary.unlisted and roots:
        what += ", and a shift no concept names"
    return f"[t2c] {summary.monitor}: {what}" + (f" - in words: {words}" if words else "")


def audit_digest(summary: Any, report: str | None) -> str:
    """The audit's Markdown digest (what chat channels render): ``reports.audit.audit_digest``."""
    from t2c_monitor.reports.audit import audit_digest as digest

    return digest(summary, report)


def build_message(summary: Any, *, report: str | None) -> AlertMessage:
    """The alert of an audit (``audit.AuditSummary``): monitor and window; the root causes first,
    each with the flagged concepts that move with it; the shift in words; a shift the bank does not
    name; then every flagged concept with its figures, and where the report is."""
    from t2c_monitor.audit import flagged_dict

    flagged = [flagged_dict(f) | {"change": change_word(f.direction), "n_current": summary.n_current}
               for f in summary.flagged]  # the payload: what webhooks receive and the alert row keeps
    by_name = {f["name"]: f for f in flagged}
    explanation = summary.explanation
    roots = [by_name[r.name] | {"share": round(r.share, 4), "echoes": list(r.echoes)}
             for r in (explanation.roots if explanation else []) if r.name in by_name]
    window = summary.window_text()
    lines = [f"Drift on monitor {summary.monitor} (audit {summary.id})",
             f"Window: {window}; {summary.n_current} images against {summary.n_baseline} baseline scores per concept"]
    if roots:
        lines.append("Root causes (the other flagged concepts move with them):")
        for i, root in enumerate(roots, start=1):
            lines.append(f"  {i}. {concept_change(root['name'], root['direction'])}: explains "
                         f"{root['share']:.0%} of the shift" + (f"; moving with it: {', '.join(root['echoes'])}"
                                                                if root["echoes"] else ""))
    if summary.words is not None:
        if summary.words.text():
            lines.append(f"In words: {summary.words.text()}")
        if summary.words.sentence:
            lines.append(f"In a sentence ({summary.words.decoder}): {summary.words.sentence}")
    if summary.unlisted:
        share = explanation.residual_share if explanation else 1.0
        said = ", ".join(summary.words.unlisted) if summary.words and summary.words.unlisted else "no words decoded"
        lines.append(f"Not named by the concept bank: {share:.0%} of the shift (in words: {said}); "
                     f"`t2c concepts suggest --audit {summary.id} --monitor {summary.monitor}` proposes concepts")
    if flagged:
        lines += ["Flagged concepts, largest effect first:", *(f"  {_concept_line(f)}" for f in flagged)]
    lines.append(f"Report: {report or 'not written'}")
    payload = {
        "subject": chat_safe(_subject(summary, flagged, roots)), "text": chat_safe("\n".join(lines)),
        "monitor": summary.monitor,
        "audit_id": summary.id, "window": window, "batches": list(summary.batches), "n_current": summary.n_current,
        "n_baseline": summary.n_baseline, "roots": roots, "echoes": summary.echoes, "unlisted": summary.unlisted,
        "words": summary.words.to_dict() if summary.words else None, "flagged": flagged, "report": report,
        "markdown": audit_digest(summary, report),
    }
    return AlertMessage(subject=payload["subject"], text=payload["text"], payload=payload)


HEADLINE_CONCEPTS = 1  # how many leading concepts identify a drift for the quiet period


def drift_key(payload: dict[str, Any], top: int | None = None) -> set[tuple[str, int]]:
    """What an alert reported, as (concept, direction) pairs: with ``top``, its ``top`` leading
    concepts (its roots, or its flagged concepts by rank for alerts without roots; a shift no
    concept names counts as the concept ''); without, everything it flagged."""
    flagged = sorted(payload.get("flagged", []), key=lambda f: f["rank"])
    if top is None:
        return {(f["name"], int(f["direction"])) for f in flagged} | ({("", 0)} if payload.get("unlisted") else set())
    leading = payload.get("roots") or flagged
    key = {(f["name"], int(f["direction"])) for f in leading[:top]}
    return key or ({("", 0)} if payload.get("unlisted") else set())


# --------------------------------------------------------------------------------------------
# Senders, one per channel type


class Sender(Protocol):
    name: str

    def send(self, message: AlertMessage) -> None: ...

    def secrets(self) -> list[str]: ...


@dataclass
class _ChannelSender:
    """What every sender shares: its channel, named by the channel's name; no secret by default."""

    channel: Any

    @property
    def name(self) -> str:
        return str(self.channel.name)

    def secrets(self) -> list[str]:
        return []


@dataclass
class WebhookSender(_ChannelSender):
    channel: WebhookChannel
    _url: str | None = field(default=None, repr=False)

    def _resolve(self) -> str:
        if self._url is None:
            if self.channel.url_env is not None:
                url = os.environ.get(self.channel.url_env, "")
                if not url:
                    raise ConfigError(f"Alert channel {self.name}: environment variable {self.channel.url_env} "
                                      "(the webhook URL) is not set in the process that sends alerts.")
            else:
                url = _load_block("secret", str(self.channel.url_secret), self.name).get()
            self._url = str(url)
        return self._url

    def secrets(self) -> list[str]:
        return [self._url] if self._url else []

    def send(self, message: AlertMessage) -> None:
        import httpx

        headers = {"Idempotency-Key": message.key} if message.key else {}
        response = httpx.post(self._resolve(), json=message.payload, headers=headers,
                              timeout=self.channel.timeout_s)
        if response.status_code >= 300:
            raise AlertSendError(f"the receiver answered HTTP {response.status_code}")


@dataclass
class BlockSender(_ChannelSender):
    channel: BlockChannel

    def send(self, message: AlertMessage) -> None:
        block_type, _, block_name = self.channel.block.partition("/")
        block = _load_block(block_type, block_name, self.name)
        if not hasattr(block, "notify"):
            raise ConfigError(f"Alert channel {self.name}: block {self.channel.block} is not a notification block "
                              "(Slack webhook, Microsoft Teams webhook, custom webhook, ...).")
        body = message.payload.get("markdown") or message.text
        if block_type.startswith("slack"):  # Slack reads <!channel> and <url|text> in any text: names are data
            body = body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        block.notify(body=body, subject=message.subject)


@dataclass
class EmailSender(_ChannelSender):
    channel: EmailChannel

    def send(self, message: AlertMessage) -> None:
        from email.message import EmailMessage

        try:
            from prefect_email import EmailServerCredentials
        except ImportError:
            raise ConfigError(f"Alert channel {self.name} sends e-mail through prefect-email: "
                              "`pip install prefect-email`.") from None
        credentials = _load_block_class(EmailServerCredentials, self.channel.credentials, self.name)
        mail = EmailMessage()
        mail["Subject"] = message.subject
        mail["From"] = self.channel.email_from or credentials.username or "t2c-monitor@localhost"
        mail["To"] = ", ".join(self.channel.to)
        if message.key:
            mail["X-Idempotency-Key"] = message.key
        mail.set_content(message.text)
        with credentials.get_server() as server:
            server.send_message(mail)


@dataclass
class FileSender(_ChannelSender):
    channel: FileChannel

    def send(self, message: AlertMessage) -> None:
        path = Path(self.channel.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(message.payload) + "\n")
            f.flush()
            os.fsync(f.fileno())


_SENDERS: dict[type, Callable[[Any], Sender]] = {
    WebhookChannel: WebhookSender, BlockChannel: BlockSender, EmailChannel: EmailSender, FileChannel: FileSender,
}


def create_sender(channel: Any) -> Sender:
    """The sender of a channel definition (from a monitor's ``alerts.channels``)."""
    try:
        return _SENDERS[type(channel)](channel)
    except KeyError:
        raise ConfigError(f"Unknown alert channel type {type(channel).__name__}") from None


def _load_block(block_type: str, block_name: str, channel: str) -> Any:
    from prefect.blocks.core import Block

    try:
        return Block.load(f"{block_type}/{block_name}")
    except ValueError as exc:
        raise ConfigError(f"Alert channel {channel}: no Prefect block {block_type}/{block_name} on this Prefect "
                          f"server ({redact(str(exc))}); create it in the Prefect UI or with `Block.save`.") from None


def _load_block_class(cls: Any, block_name: str, channel: str) -> Any:
    try:
        return cls.load(block_name)
    except ValueError as exc:
        raise ConfigError(f"Alert channel {channel}: no {cls.__name__} block named {block_name} on this Prefect "
                          f"server ({redact(str(exc))}).") from None


# --------------------------------------------------------------------------------------------
# Delivery


@dataclass(frozen=True)
class AlertOutcome:
    alert_id: int
    channel: str
    status: AlertStatus
    attempts: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _send_with_retries(db: Database, alert_id: int, sender: Sender, message: AlertMessage, *, retries: int,
                       delay: timedelta, sleep: Callable[[float], None], log: Callable[[str], None]) -> AlertOutcome:
    message = message.keyed(alert_id, sender.name)
    wait = delay.total_seconds()
    error: str | None = None
    for attempt in range(1, retries + 2):
        try:
            sender.send(message)
        except Exception as exc:  # noqa: BLE001 - any failure of a channel is recorded, never raised into the audit
            error = redact(f"{type(exc).__name__}: {exc}", sender.secrets())
            with db.engine.begin() as conn:
                alert_store.record_attempt(conn, alert_id, sent=False, error=error)
            log(f"alert {alert_id} to {sender.name}: attempt {attempt} failed: {error}")
            if isinstance(exc, ConfigError):  # a channel set up wrong stays wrong: kept failed, sent once fixed
                return AlertOutcome(alert_id, sender.name, "failed", attempt, error)
            if attempt <= retries:
                sleep(min(wait, MAX_RETRY_DELAY_S))
                wait *= 2
            continue
        with db.engine.begin() as conn:
            alert_store.record_attempt(conn, alert_id, sent=True, error=None)
        log(f"alert {alert_id} sent to {sender.name} (attempt {attempt})")
        return AlertOutcome(alert_id, sender.name, "sent", attempt)
    return AlertOutcome(alert_id, sender.name, "failed", retries + 1, error)


def deliver_alerts(db: Database, summary: Any, config: AlertsConfig, *, monitor_id: int, report: str | None = None,
                   sleep: Callable[[float], None] = time.sleep,
                   log: Callable[[str], None] = lambda _: None) -> list[AlertOutcome]:
    """Alert every channel of ``config`` about an audit that found a shift (flagged concepts or drift
    no concept names; nothing otherwise); the same drift alerted within the quiet period is held back."""
    if not summary.found_shift or not config.channels:
        return []
    message = build_message(summary, report=report)
    key = drift_key(message.payload, top=HEADLINE_CONCEPTS)

    def same_drift(earlier: AlertRow) -> str | None:
        if earlier.audit_id != summary.id and key <= drift_key(earlier.payload):
            return f"the same drift was alerted in audit {earlier.audit_id}"
        return None

    return _deliver(db, message, config, monitor_id=monitor_id, audit_id=summary.id, kind="drift",
                    repeat_of=same_drift, sleep=sleep, log=log)


def _deliver(db: Database, message: AlertMessage, config: AlertsConfig, *, monitor_id: int, audit_id: int | None,
             kind: AlertKind, repeat_of: Callable[[AlertRow], str | None], sleep: Callable[[float], None],
             log: Callable[[str], None]) -> list[AlertOutcome]:
    """Send ``message`` to every channel of ``config``: a row per channel first, held back (``suppressed``)
    where ``repeat_of`` says why an alert of the quiet period already told that channel."""
    outcomes = []
    for channel in config.resolved_channels():
        sender = create_sender(channel)
        with db.engine.begin() as conn:
            recent = alert_store.recent_alerts(conn, monitor_id, sender.name, config.quiet_period, kind=kind)
            why = next((reason for reason in map(repeat_of, recent) if reason), None)
            alert_id = alert_store.insert_alert(conn, monitor_id=monitor_id, audit_id=audit_id, kind=kind,
                                                channel=sender.name, payload=message.payload,
                                                status="suppressed" if why else "pending")
        if why:
            log(f"alert {alert_id} to {sender.name} suppressed: {why} within the quiet period ({config.quiet_period})")
            outcomes.append(AlertOutcome(alert_id, sender.name, "suppressed", 0))
            continue
        outcomes.append(_send_with_retries(db, alert_id, sender, message, retries=config.retries,
                                           delay=config.retry_delay, sleep=sleep, log=log))
    return outcomes


def no_data_message(monitor: str, newest: str | None, since: datetime, age: timedelta, limit: timedelta,
                    inbox: str | None) -> AlertMessage:
    """The alert of a monitor that has stored no batch for ``age`` (more than its ``limit``): since its
    ``newest`` batch was received (``since``), or, when it never stored one, since it was recorded."""
    inbox = _USERINFO.sub(r"\1", inbox) if inbox else None  # a URI's user:password@ never goes out
    where = f" Check the feed{f' (inbox {inbox})' if inbox else ''} and `t2c batches list --monitor {monitor}`."
    last = (f"Newest batch: {newest}, received {since:%Y-%m-%d %H:%M:%S %Z}." if newest
            else f"No batch was ever stored; the monitor was recorded {since:%Y-%m-%d %H:%M:%S %Z}.")
    lines = [f"No data on monitor {monitor}: no batch stored for {elapsed(age)} "
             f"(alerts.no_data_after is {format_duration(limit)}).", last + where]
    payload = {
        "subject": f"[t2c] {monitor}: no images stored for {elapsed(age)}", "text": "\n".join(lines),
        "monitor": monitor, "kind": "no_data", "newest_batch": newest,
        "since": since.isoformat(), "age_seconds": round(age.total_seconds()),
        "markdown": f"**{monitor}**: " + " ".join(lines),
    }
    return AlertMessage(subject=payload["subject"], text=payload["text"], payload=payload)


def alert_no_data(db: Database, monitor: str, *, now: datetime | None = None,
                  sleep: Callable[[float], None] = time.sleep,
                  log: Callable[[str], None] = lambda _: None) -> list[AlertOutcome]:
    """Alert the monitor's channels when it has stored no batch for longer than ``alerts.no_data_after``
    (counted from its newest batch, or from when it was recorded if it never stored one), once per quiet
    period while that lasts; nothing when the setting is unset."""
    from t2c_monitor.store import audits as audit_store
    from t2c_monitor.store.monitors import get_monitor

    with db.session() as session:
        record = get_monitor(session, monitor)
    config = record.config.alerts
    if config.no_data_after is None or not config.channels:
        return []
    with db.engine.connect() as conn:
        newest = audit_store.newest_batch(conn, record.id)
        since = newest[1] if newest else audit_store.monitor_recorded_at(conn, record.id)
    age = (now or datetime.now(UTC)) - since
    if age <= config.no_data_after:
        return []
    message = no_data_message(monitor, newest[0] if newest else None, since, age, config.no_data_after,
                              record.config.schedules.inbox)

    def still_silent(earlier: AlertRow) -> str:
        return f"no data was alerted at {earlier.created_at:%Y-%m-%d %H:%M:%S %Z}"

    return _deliver(db, message, config, monitor_id=record.id, audit_id=None, kind="no_data",
                    repeat_of=still_silent, sleep=sleep, log=log)


def retry_failed_alerts(db: Database, channels: dict[str, Any], *, monitor_id: int | None = None,
                        sleep: Callable[[float], None] = time.sleep,
                        log: Callable[[str], None] = lambda _: None) -> list[AlertOutcome]:
    """Send again every failed alert (of one monitor, or all) whose channel is in ``channels``
    (name -> channel definition), once each, with the message stored on the row."""
    with db.engine.connect() as conn:
        failed = alert_store.failed_alerts(conn, monitor_id)
    outcomes = []
    for row in failed:
        channel = channels.get(row.channel)
        if channel is None:
            log(f"alert {row.id}: channel {row.channel} is no longer configured; left failed")
            continue
        outcomes.append(_send_with_retries(db, row.id, create_sender(channel), AlertMessage.from_payload(
            row.payload), retries=0, delay=timedelta(0), sleep=sleep, log=log))
    return outcomes


def alert_audit(db: Database, summary: Any, *, sleep: Callable[[float], None] = time.sleep,
                log: Callable[[str], None] = lambda _: None) -> list[AlertOutcome]:
    """Alert the channels of the audited monitor (``summary``: ``audit.AuditSummary``), naming the
    report by the monitor's ``report_url`` when it has one, else by its path."""
    from t2c_monitor.store.monitors import get_monitor

    with db.session() as session:
        record = get_monitor(session, summary.monitor)
    config = record.config.alerts
    report = summary.report
    if config.report_url and report:
        report = config.report_url.format(audit_id=summary.id, monitor=summary.monitor)
    return deliver_alerts(db, summary, config, monitor_id=record.id, report=report, sleep=sleep, log=log)


def resend_failed_alerts(db: Database, monitor: str | None = None, *, sleep: Callable[[float], None] = time.sleep,
                         log: Callable[[str], None] = lambda _: None) -> list[AlertOutcome]:
    """Retry the failed alerts of one monitor (or of all), on the channels their monitors name now."""
    from t2c_monitor.store.monitors import get_monitor, list_monitors

    outcomes = []
    with db.session() as session:
        names = [monitor] if monitor else [m.name for m in list_monitors(session)]
        records = [get_monitor(session, n) for n in names]
    for record in records:
        channels = {c.name: c for c in record.config.alerts.resolved_channels()}
        outcomes += retry_failed_alerts(db, channels, monitor_id=record.id, sleep=sleep, log=log)
    return outcomes
