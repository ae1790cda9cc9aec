"""Alerts delivered to real receivers: a local HTTP server (plain webhook, Prefect Secret and
notification blocks) and a local SMTP server (prefect-email); failures recorded and retried,
quiet periods respected, secrets nowhere."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest
from conftest import apply_tiny
from sqlalchemy import text

from t2c_monitor.alerts import alert_audit, build_message, redact, resend_failed_alerts
from t2c_monitor.audit import build_baseline, run_audit
from t2c_monitor.receiver import WebhookReceiver

TOKEN = "s3cr3t-T0KEN-4242"


@pytest.fixture
def receiver():
    with WebhookReceiver(path=f"/hooks/{TOKEN}") as r:
        yield r


@pytest.fixture
def drifted(monitored):
    """The tiny monitor with a baseline of two reference batches and an all-dark batch to audit."""
    build_baseline(monitored, "tiny", batches=["ref-1", "ref-2"], reservoir_size=200)
    return monitored


def _webhook_monitor(db, tiny_monitor_dir, tmp_path, timeout_s: float = 10.0, **alerts):
    return apply_tiny(db, tiny_monitor_dir, tmp_path / "config", alerts={"channels": ["oncall"], **alerts},
                      channels={"oncall": {"type": "webhook", "url_env": "T2C_TEST_HOOK", "timeout_s": timeout_s}})


def _everything_stored(db) -> str:
    with db.engine.connect() as conn:
        tables = ["alert", "audit", "monitor", "report", "batch"]
        return " ".join(str(conn.execute(text(f"SELECT json_agg(t)::text FROM {t} t")).scalar()) for t in tables)


def test_webhook_alert_names_monitor_window_concepts_and_report(drifted, tiny_monitor_dir, tmp_path, receiver,
                                                                monkeypatch, caplog):
    monkeypatch.setenv("T2C_TEST_HOOK", receiver.url)
    _webhook_monitor(drifted, tiny_monitor_dir, tmp_path)
    summary = run_audit(drifted, "tiny", batches=["dark"], report_dir=tmp_path / "reports")
    assert summary.flagged
    logged: list[str] = []
    (outcome,) = alert_audit(drifted, summary, log=logged.append)
    assert (outcome.status, outcome.attempts, outcome.channel) == ("sent", 1, "oncall")

    (body,) = receiver.bodies
    assert receiver.paths == [f"/hooks/{TOKEN}"]
    assert body["monitor"] == "tiny" and body["audit_id"] == summary.id and body["batches"] == ["dark"]
    assert body["report"] == summary.report and (tmp_path / "reports").exists()
    assert [f["name"] for f in body["flagged"]] == [f.name for f in summary.flagged]
    for sent, flagged in zip(body["flagged"], summary.flagged, strict=True):
        assert sent["change"] == ("more" if flagged.direction > 0 else "less")
        assert sent["ks_stat"] == pytest.approx(flagged.ks_stat) and sent["q_value"] <= 0.005
        assert f"{sent['name']}: {sent['change']} (KS {sent['ks_stat']:.3f}" in body["text"]
    assert "batch dark" in body["text"] and summary.report in body["text"]
    assert "tiny" in body["subject"]
    # the alert leads with the root causes, their echoes and the shift in words
    assert [r["name"] for r in body["roots"]] == [r.name for r in summary.roots] and body["roots"]
    lead = body["roots"][0]
    assert f"{lead['change']} '{lead['name']}'" in body["subject"].replace("fewer", "less")
    assert body["text"].index("Root causes") < body["text"].index("Flagged concepts")
    assert body["words"]["grew"] == summary.words.grew and f"In words: {summary.words.text()}" in body["text"]
    assert f"in words: {summary.words.text()}" in body["subject"]
    assert body["markdown"].startswith("**tiny**: ") and "Root causes:" in body["markdown"]
    assert all(body["echoes"][echo] == lead["name"] for echo in lead["echoes"])
    # a shift no concept names leads the message when no root explains it, with how to name it
    hidden = dataclasses.replace(
        summary, flagged=[], words=dataclasses.replace(summary.words, unlisted=["snowfall"]),
        explanation=dataclasses.replace(summary.explanation, roots=[], echoes={}, unlisted=True, residual_share=0.8))
    message = build_message(hidden, report=None)
    assert message.subject.startswith("[t2c] tiny: a shift no concept names") and message.payload["unlisted"]
    assert "Not named by the concept bank: 80% of the shift (in words: snowfall)" in message.text
    assert f"t2c concepts suggest --audit {summary.id} --monitor tiny" in message.text

    with drifted.engine.connect() as conn:
        row = conn.execute(text("SELECT status, attempts, sent_at, channel FROM alert")).one()
    assert (row.status, row.attempts, row.channel) == ("sent", 1, "oncall") and row.sent_at is not None
    everywhere = _everything_stored(drifted) + " ".join(logged) + caplog.text + json.dumps(body)
    assert TOKEN not in everywhere and receiver.url not in everywhere


def test_failing_receiver_is_retried_then_recorded_and_resent_later(drifted, tiny_monitor_dir, tmp_path, receiver,
                                                                     monkeypatch):
    monkeypatch.setenv("T2C_TEST_HOOK", receiver.url)
    _webhook_monitor(drifted, tiny_monitor_dir, tmp_path, retries=2, retry_delay="0.01s")
    waits: list[float] = []

    receiver.fail_next = 2  # two 503s, then it recovers: the third attempt gets through
    first = run_audit(drifted, "tiny", batches=["dark"])
    (outcome,) = alert_audit(drifted, first, sleep=waits.append)
    assert (outcome.status, outcome.attempts) == ("sent", 3) and len(receiver.bodies) == 1
    assert waits == [0.01, 0.02], "waits double between attempts"

    receiver.fail_next = 100  # down for good: every attempt fails, the failure is kept
    _webhook_monitor(drifted, tiny_monitor_dir, tmp_path, retries=1, retry_delay="0s", quiet_period="0s")
    second = run_audit(drifted, "tiny", batches=["dark"])
    (outcome,) = alert_audit(drifted, second, sleep=waits.append)
    assert (outcome.status, outcome.attempts) == ("failed", 2) and "503" in outcome.error
    with drifted.engine.connect() as conn:
        row = conn.execute(text("SELECT a.status, a.attempts, a.last_error, au.n_flagged FROM alert a "
                                "JOIN audit au ON au.id = a.audit_id WHERE a.audit_id = :a"), {"a": second.id}).one()
    assert (row.status, row.attempts) == ("failed", 2) and "503" in row.last_error
    assert row.n_flagged == len(second.flagged), "the audit is kept whatever happens to its alert"
    assert TOKEN not in _everything_stored(drifted)

    receiver.fail_next = 0  # back up: the failed alert is sent again, with the message it was meant to carry
    (resent,) = resend_failed_alerts(drifted, "tiny")
    assert (resent.alert_id, resent.status, resent.attempts) == (outcome.alert_id, "sent", 1)
    assert receiver.bodies[-1]["audit_id"] == second.id
    assert resend_failed_alerts(drifted, "tiny") == [], "nothing is sent twice"


def test_receiver_faults_deliver_every_alert_at_least_once_under_one_idempotency_key(
        drifted, tiny_monitor_dir, tmp_path, receiver, monkeypatch):
    """A receiver that answers too late (after keeping the message), one that drops the connection, and
    one that is not there: every attempt is recorded, the alert arrives, and a repeat carries the key of
    the first delivery, so the receiver can drop it; repeats happen only where a timeout hid a delivery."""
    monkeypatch.setenv("T2C_TEST_HOOK", receiver.url)
    _webhook_monitor(drifted, tiny_monitor_dir, tmp_path, timeout_s=0.5, retries=2, retry_delay="0s",
                     quiet_period="0s")
    receiver.slow_next, receiver.slow_seconds = 1, 1.5  # kept, but the answer comes after the sender's timeout
    receiver.drop_next = 0
    slow = run_audit(drifted, "tiny", batches=["dark"])
    (outcome,) = alert_audit(drifted, slow, sleep=lambda _: None)
    assert (outcome.status, outcome.attempts) == ("sent", 2) and "Timeout" in _last_error(drifted, outcome.alert_id)
    assert len(receiver.keys) == 2 and receiver.keys[0] == receiver.keys[1] and receiver.keys[0].startswith("t2c-")
    assert [b["idempotency_key"] for b in receiver.bodies] == receiver.keys

    receiver.drop_next = 1  # the connection closes unanswered: the message was not kept, the retry delivers it
    dropped = run_audit(drifted, "tiny", batches=["dark"])
    (outcome,) = alert_audit(drifted, dropped, sleep=lambda _: None)
    assert (outcome.status, outcome.attempts) == ("sent", 2)
    assert receiver.keys[2:] == [outcome_key(receiver, dropped.id)] and receiver.keys[2] != receiver.keys[0]

    monkeypatch.setenv("T2C_TEST_HOOK", "http://127.0.0.1:9/nobody-listens")  # not there at all
    absent = run_audit(drifted, "tiny", batches=["dark"])
    (outcome,) = alert_audit(drifted, absent, sleep=lambda _: None)
    assert (outcome.status, outcome.attempts) == ("failed", 3) and "Connect" in _last_error(drifted, outcome.alert_id)
    monkeypatch.setenv("T2C_TEST_HOOK", receiver.url)
    (resent,) = resend_failed_alerts(drifted, "tiny", sleep=lambda _: None)
    assert resent.status == "sent" and receiver.bodies[-1]["audit_id"] == absent.id
    # each audit's alert arrived; the only repeat is the one the slow receiver's timeout caused
    assert sorted({b["audit_id"] for b in receiver.bodies}) == sorted([slow.id, dropped.id, absent.id])
    assert len(receiver.keys) - len(set(receiver.keys)) == 1


def outcome_key(receiver: WebhookReceiver, audit_id: int) -> str:
    (key,) = {b["idempotency_key"] for b in receiver.bodies if b["audit_id"] == audit_id}
    return key


def _last_error(db, alert_id: int) -> str:
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT last_error FROM alert WHERE id = :i"), {"i": alert_id}).scalar_one() or ""


def test_a_channel_set_up_wrong_is_not_retried_and_is_sent_once_fixed(drifted, tiny_monitor_dir, tmp_path, receiver,
                                                                       monkeypatch):
    """The webhook's environment variable is missing: retrying within seconds cannot help, so the
    alert is kept failed after one attempt (no waits), saying what to fix, and goes out once it is fixed."""
    monkeypatch.delenv("T2C_TEST_HOOK", raising=False)
    _webhook_monitor(drifted, tiny_monitor_dir, tmp_path, retries=3, retry_delay="5s")
    waits: list[float] = []
    (outcome,) = alert_audit(drifted, run_audit(drifted, "tiny", batches=["dark"]), sleep=waits.append)
    assert (outcome.status, outcome.attempts, waits) == ("failed", 1, [])
    assert "T2C_TEST_HOOK" in outcome.error and "not set" in outcome.error
    monkeypatch.setenv("T2C_TEST_HOOK", receiver.url)
    (resent,) = resend_failed_alerts(drifted, "tiny")
    assert (resent.alert_id, resent.status) == (outcome.alert_id, "sent") and len(receiver.bodies) == 1


def test_unreachable_receiver_error_is_recorded_without_the_secret(drifted, tiny_monitor_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("T2C_TEST_HOOK", f"http://127.0.0.1:9/{TOKEN}")  # discard port: connection refused
    _webhook_monitor(drifted, tiny_monitor_dir, tmp_path, retries=0)
    (outcome,) = alert_audit(drifted, run_audit(drifted, "tiny", batches=["dark"]))
    assert outcome.status == "failed" and "Connect" in outcome.error and TOKEN not in outcome.error
    assert TOKEN not in _everything_stored(drifted)
    assert redact(f"GET http://h/{TOKEN}?x=1 failed", [TOKEN]) == "GET <url> failed"


def test_quiet_period_holds_back_an_ongoing_drift_but_not_a_new_one(drifted, tiny_monitor_dir, tmp_path, receiver,
                                                                    monkeypatch):
    monkeypatch.setenv("T2C_TEST_HOOK", receiver.url)
    _webhook_monitor(drifted, tiny_monitor_dir, tmp_path, quiet_period="6h")
    first = run_audit(drifted, "tiny", batches=["dark"])
    assert [o.status for o in alert_audit(drifted, first)] == ["sent"]
    again = run_audit(drifted, "tiny", batches=["dark"])  # the same drift an hour later
    assert [o.status for o in alert_audit(drifted, again)] == ["suppressed"]
    assert len(receiver.bodies) == 1

    # a drift led by a root the earlier alert did not name is news; a new minor concept is not
    summary = run_audit(drifted, "tiny", batches=["dark"])
    assert summary.roots and summary.explanation is not None
    tail = dataclasses.replace(summary.flagged[0], name="a minor concept", rank=len(summary.flagged) + 4)
    dragged = dataclasses.replace(summary, flagged=[*summary.flagged, tail])
    assert [o.status for o in alert_audit(drifted, dragged)] == ["suppressed"]
    lead = dataclasses.replace(summary.flagged[0], name="a concept never alerted", rank=0)
    root = dataclasses.replace(summary.explanation.roots[0], name=lead.name, index=-1)
    news = dataclasses.replace(summary, flagged=[lead, *summary.flagged],
                               explanation=dataclasses.replace(summary.explanation, roots=[root]))
    assert [o.status for o in alert_audit(drifted, news)] == ["sent"]

    _webhook_monitor(drifted, tiny_monitor_dir, tmp_path, quiet_period="0s")
    assert [o.status for o in alert_audit(drifted, run_audit(drifted, "tiny", batches=["dark"]))] == ["sent"]
    with drifted.engine.connect() as conn:
        statuses = conn.execute(text("SELECT status FROM alert ORDER BY id")).scalars().all()
    assert statuses == ["sent", "suppressed", "suppressed", "sent", "sent"]


def test_no_flag_no_alert(drifted, tiny_monitor_dir, tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("T2C_TEST_HOOK", receiver.url)
    _webhook_monitor(drifted, tiny_monitor_dir, tmp_path)
    summary = run_audit(drifted, "tiny", batches=["dark"])
    quiet = summary.__class__(**{**summary.__dict__, "flagged": []})
    assert alert_audit(drifted, quiet) == [] and receiver.bodies == []


def test_missing_env_var_is_a_failed_alert_that_says_what_to_set(drifted, tiny_monitor_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("T2C_TEST_HOOK", raising=False)
    _webhook_monitor(drifted, tiny_monitor_dir, tmp_path, retries=0)
    (outcome,) = alert_audit(drifted, run_audit(drifted, "tiny", batches=["dark"]))
    assert outcome.status == "failed" and "T2C_TEST_HOOK" in outcome.error


def test_prefect_blocks_secret_webhook_notification_block_and_email(prefect_harness, drifted, tiny_monitor_dir,
                                                                    tmp_path, receiver):
    """Channels resolved to Prefect blocks saved on a real Prefect API: a Secret holding the webhook
    URL, a CustomWebhookNotificationBlock, and prefect-email's EmailServerCredentials against a local
    SMTP server."""
    from aiosmtpd.controller import Controller
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.blocks.system import Secret
    from prefect_email import EmailServerCredentials

    mails = []

    class Inbox:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
            mails.append(envelope)
            return "250 OK"

    with socket.socket() as probe:  # aiosmtpd's start() connects to its port, so it needs a real one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(Inbox(), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        Secret(value=receiver.url).save("t2c-test-hook-url", overwrite=True)
        CustomWebhookNotificationBlock(name="t2c", url=receiver.url, allow_private_urls=True,
                                       json_data={"text": "{{body}}", "title": "{{subject}}"}
                                       ).save("t2c-test-notify", overwrite=True)
        EmailServerCredentials(smtp_server="127.0.0.1", smtp_port=port,
                               smtp_type="INSECURE").save("t2c-test-smtp", overwrite=True)
        apply_tiny(drifted, tiny_monitor_dir, tmp_path / "config", alerts={"channels": ["secret", "block", "mail"]},
                   channels={"secret": {"type": "webhook", "url_secret": "t2c-test-hook-url"},
                             "block": {"type": "prefect_block", "block": "custom-webhook/t2c-test-notify"},
                             "mail": {"type": "email", "credentials": "t2c-test-smtp", "to": ["oncall@example.com"]}})
        summary = run_audit(drifted, "tiny", batches=["dark"])
        outcomes = alert_audit(drifted, summary)
    finally:
        smtp.stop()
    assert [(o.channel, o.status) for o in outcomes] == [("secret", "sent"), ("block", "sent"), ("mail", "sent")]
    webhook, notification = receiver.bodies
    assert webhook["audit_id"] == summary.id
    assert notification["title"].startswith("[t2c] tiny:") and summary.flagged[0].name in notification["text"]
    assert notification["text"].startswith("**tiny**: "), "notification blocks get the Markdown digest"
    (mail,) = mails
    assert mail.rcpt_tos == ["oncall@example.com"]
    content = mail.content.decode()
    assert "Subject: [t2c] tiny:" in content and f"Drift on monitor tiny (audit {summary.id})" in content
    assert TOKEN not in _everything_stored(drifted)


def test_missing_block_is_a_failed_alert_naming_the_block(prefect_harness, drifted, tiny_monitor_dir, tmp_path):
    apply_tiny(drifted, tiny_monitor_dir, tmp_path / "config", alerts={"channels": ["slack"], "retries": 0},
               channels={"slack": {"type": "prefect_block", "block": "slack-webhook/nobody-made-this"}})
    (outcome,) = alert_audit(drifted, run_audit(drifted, "tiny", batches=["dark"]))
    assert outcome.status == "failed" and "slack-webhook/nobody-made-this" in outcome.error


def test_file_channel_appends_one_json_line_per_alert(drifted, tiny_monitor_dir, tmp_path):
    apply_tiny(drifted, tiny_monitor_dir, tmp_path / "config", alerts={"channels": ["log"], "quiet_period": 0},
               channels={"log": {"type": "file", "path": "alerts/alerts.jsonl"}})
    for _ in range(2):
        alert_audit(drifted, run_audit(drifted, "tiny", batches=["dark"]))
    lines = (tmp_path / "config" / "alerts" / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["monitor"] == "tiny" for line in lines)


def test_a_no_data_alert_names_the_newest_batch_and_never_an_inbox_password():
    from datetime import UTC, datetime, timedelta

    from t2c_monitor.alerts import no_data_message

    received = datetime(2026, 12, 1, tzinfo=UTC)
    message = no_data_message("cam", "day-3", received, timedelta(hours=27, minutes=4),
                              timedelta(days=1), "https://bob:hunter2@files.example/inbox/")
    assert message.subject == "[t2c] cam: no images stored for 1d 3h"
    assert "Newest batch: day-3, received 2026-12-01 00:00:00 UTC" in message.text
    assert "inbox https://files.example/inbox/" in message.text
    assert "hunter2" not in json.dumps(message.payload) and "bob" not in json.dumps(message.payload)



def test_a_monitor_that_never_stored_a_batch_counts_its_silence_from_when_it_was_recorded(applied_monitor,
                                                                                        tiny_monitor_dir, tmp_path):
    from t2c_monitor.alerts import alert_no_data

    db = applied_monitor
    apply_tiny(db, tiny_monitor_dir, tmp_path / "config", alerts={"channels": ["log"], "no_data_after": "1d"},
               channels={"log": {"type": "file", "path": "alerts.jsonl"}})
    assert alert_no_data(db, "tiny") == [], "recorded just now: not silent for a day yet"
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE monitor SET created_at = created_at - interval '30 hours'"))
    (sent,) = alert_no_data(db, "tiny")
    assert sent.status == "sent"
    line = json.loads((tmp_path / "config" / "alerts.jsonl").read_text().splitlines()[-1])
    assert line["newest_batch"] is None and "No batch was ever stored; the monitor was recorded" in line["text"]
    assert line["subject"] == "[t2c] tiny: no images stored for 1d 6h"


def test_alerts_retry_exits_1_while_an_alert_still_fails(drifted, tiny_monitor_dir, tmp_path, receiver, monkeypatch):
    from typer.testing import CliRunner

    from t2c_monitor.cli import app

    monkeypatch.setenv("T2C_TEST_HOOK", "http://127.0.0.1:9/hook")  # discard port: connection refused
    _webhook_monitor(drifted, tiny_monitor_dir, tmp_path, retries=0)
    (outcome,) = alert_audit(drifted, run_audit(drifted, "tiny", batches=["dark"]))
    assert outcome.status == "failed"
    again = CliRunner().invoke(app, ["alerts", "retry", "--monitor", "tiny"])
    assert again.exit_code == 1 and "1 of 1 alerts failed again" in again.output, again.output
    monkeypatch.setenv("T2C_TEST_HOOK", receiver.url)
    delivered = CliRunner().invoke(app, ["alerts", "retry", "--monitor", "tiny", "--json"])
    assert delivered.exit_code == 0, delivered.output
    assert [a["status"] for a in json.loads(delivered.stdout)["alerts"]] == ["sent"] and len(receiver.bodies) == 1
