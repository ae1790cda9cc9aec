"""The holes an hour of probing found, each reproduced as it was found: script in evidently's page, a YAML
bomb as a monitor's description, a password in the database URL's query string, square brackets and
escape codes in stored names, a FIFO in an ingest folder, an inbox interval of 0s, a hint naming a
command that does not exist, and `t2c alerts retry` exiting 0 when nothing was delivered."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import apply_tiny, write_images
from sqlalchemy import text
from typer.testing import CliRunner

from t2c_monitor.cli import app
from t2c_monitor.errors import ConfigError

INJECTED = "</script><t2cinj><img src=x onerror=t2cinj>"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [v or "" for k, v in attrs if k.startswith("on")]


def injected_elements(page: str) -> list[str]:
    """Elements or event handlers that came from INJECTED rather than from the page's own markup."""
    parser = _Tags()
    parser.feed(page)
    return [t for t in parser.tags if t.startswith("t2cinj")] + [h for h in parser.handlers if "t2cinj" in h]


def invoke(*args: str, env: dict[str, str] | None = None):
    from t2c_monitor.settings import reset_settings_cache

    reset_settings_cache()  # the settings are read once per process: this "process" may have new ones
    return CliRunner().invoke(app, list(args), env=env)


def _rows(db) -> dict[str, int]:
    with db.engine.connect() as conn:
        tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        return {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in tables}


def test_evidently_page_keeps_a_concept_named_script_as_text(tmp_path):
    import numpy as np
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    from t2c_monitor.reports.evidently_run import script_safe

    names = [INJECTED, "a\n</SCRIPT >x", "<!--<script>", "plain"]
    rng = np.random.default_rng(0)
    ref, cur = (pd.DataFrame(rng.normal(size=(40, 4)) + shift, columns=names) for shift in (0, 1))
    definition = DataDefinition(numerical_columns=names)
    snapshot = Report([ValueDrift(column=n, method="ks") for n in names]).run(
        Dataset.from_pandas(cur, data_definition=definition), Dataset.from_pandas(ref, data_definition=definition))
    raw = snapshot.get_html_str(as_iframe=False)
    assert injected_elements(raw), "evidently itself writes names raw inside its <script> (else this test is moot)"
    page = script_safe(raw)
    assert injected_elements(page) == []
    assert "Drift in column '\\u003c/script>\\u003ct2cinj>" in page  # the name is all there, for JavaScript to show


def _billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines)


def test_a_yaml_bomb_or_a_binary_monitor_file_is_refused_at_once_in_one_line(applied_monitor, tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_billion_laughs() + f"\nmonitors:\n  - name: tiny\n    description: *a{9}\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 64)
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 50_000 + "]" * 50_000)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    before = _rows(applied_monitor)
    for path, says in ((bomb, "expands to more than"), (binary, "not UTF-8"), (deep, "nests deeper"),
                       (fifo, "not a regular file (a FIFO)")):
        started = time.perf_counter()
        result = invoke("monitor", "apply", str(path))
        assert time.perf_counter() - started < 10, path
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.output
        assert len(lines[0]) < 400
    assert _rows(applied_monitor) == before


def test_a_password_in_the_database_url_query_string_is_never_printed(database_url):
    from t2c_monitor.store.engine import mask_url

    secret = "Qu3ry-Pa55"
    joiner = "&" if "?" in database_url else "?"
    url = f"{database_url}{joiner}password={secret}&sslpassword={secret}-ssl&application_name=probe"
    for args in (("db", "url"), ("db", "status")):
        result = invoke(*args, env={"T2C_DATABASE_URL": url})
        assert result.exit_code == 0, result.output
        assert secret not in result.output and "password=***" in result.output, result.output
    refused = invoke("db", "status", env={"T2C_DATABASE_URL": f"mysql://u:{secret}@h/db?password={secret}"})
    assert refused.exit_code == 2 and secret not in refused.output
    assert secret not in mask_url(f"postgresql://u:{secret}@h/db?password={secret}&sslkey=/k&token={secret}")


def test_brackets_emoji_codes_and_escapes_in_stored_names_print_as_written(applied_monitor, tmp_path):
    write_images(tmp_path / "images", 4)
    for batch in ("probe[/]", "grass:+1 [bold]x[/bold]"):
        stored = invoke("ingest", str(tmp_path / "images"), "--monitor", "tiny", "--batch-id", batch, "--no-flow")
        assert stored.exit_code == 0, stored.output
    listed = invoke("batches", "list", "--monitor", "tiny")
    assert listed.exit_code == 0, listed.output
    assert "probe[/]" in listed.output and "grass:+1 [bold]x[/bold]" in listed.output
    unknown = invoke("batches", "list", "--monitor", "[/]:+1:")
    assert unknown.exit_code == 2 and "[/]:+1:" in unknown.output and "Traceback" not in unknown.output
    before = _rows(applied_monitor)
    for batch in ("two\nlines", "clear \x1b[2J", "back\rspace"):
        refused = invoke("ingest", str(tmp_path / "images"), "--monitor", "tiny", "--batch-id", batch, "--no-flow")
        assert refused.exit_code == 2 and "control character" in refused.output, refused.output
        assert "\x1b" not in refused.output and "\r" not in refused.output
    assert _rows(applied_monitor) == before


def test_a_concept_named_with_brackets_prints_in_audits_and_searches(applied_monitor, tiny_monitor_dir, tmp_path):
    from conftest import TINY_BANK

    bank = tmp_path / "bank.yaml"
    bank.write_text(TINY_BANK + '  - "[/]"\n  - "grass:+1"\n')
    apply_tiny(applied_monitor, tiny_monitor_dir, tmp_path / "config", bank=str(bank))
    folder = tmp_path / "odd [/] name"
    write_images(folder, 30, seed=5)
    for batch in ("ref", "day"):
        assert invoke("ingest", str(folder), "--monitor", "tiny", "--batch-id", batch, "--no-flow").exit_code == 0
    assert invoke("baseline", "build", "--monitor", "tiny", "--batches", "ref").exit_code == 0
    audited = invoke("audit", "--monitor", "tiny", "--batches", "day", "--no-flow", "--no-alerts")
    assert audited.exit_code == 0 and "Traceback" not in audited.output, audited.output
    found = invoke("search", "--monitor", "tiny", "--text", "[/]", "--top", "3")
    assert found.exit_code == 0, found.output
    assert "odd [/] name" in found.output and "nearest to '[/]'" in found.output
    assert "search --monitor tiny --index build" in found.output  # the hint names a command that exists


def test_a_fifo_in_an_ingest_folder_is_refused_unopened_and_the_process_exits(applied_monitor, database_url,
                                                                            tmp_path):
    folder = tmp_path / "inbox"
    write_images(folder, 3)
    os.mkfifo(folder / "pipe.png")
    env = {**os.environ, "T2C_DATABASE_URL": database_url, "T2C_HOME": str(tmp_path / "home"), "T2C_DEVICE": "cpu"}
    t2c = Path(sys.executable).parent / "t2c"
    done = subprocess.run([t2c, "ingest", str(folder), "--monitor", "tiny", "--no-flow", "--batch-id", "fifo"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with applied_monitor.engine.connect() as conn:
        failed = text("SELECT uri, failure_reason FROM image WHERE failure_reason IS NOT NULL")
        reasons = dict(conn.execute(failed).all())
    assert list(reasons) == [str(folder / "pipe.png")]
    assert reasons[str(folder / "pipe.png")].startswith("refused: not a regular file (a FIFO)")
    whole = CliRunner().invoke(app, ["ingest", str(folder / "pipe.png"), "--monitor", "tiny", "--no-flow"])
    assert whole.exit_code == 2 and "is a FIFO, not a folder or a file" in whole.output, whole.output


def test_an_inbox_every_0s_and_durations_out_of_range_are_refused(tmp_path):
    from t2c_monitor.monitors import parse_monitors

    def schedules(**values):
        return {"name": "m", "encoder": "timm:x", "clip": "open_clip:y", "aligner": "a", "bank": "b.yaml",
                "schedules": {"inbox": str(tmp_path), **values}}

    out_of_range = "between 0s and 100 years"
    for interval, says in (("0s", "at least 1s"), ("0.2s", "at least 1s"), ("99999999999999999999d", out_of_range),
                           (float("nan"), out_of_range), (-5, out_of_range)):
        with pytest.raises(ConfigError, match=says):
            parse_monitors(schedules(ingest_interval=interval), base=tmp_path)
    with pytest.raises(ConfigError, match="carries a credential"):
        parse_monitors(schedules(ingest_interval="10m", inbox="s3://bucket/in?X-Amz-Signature=abc"), base=tmp_path)
    (config,) = parse_monitors(schedules(ingest_interval="10m"), base=tmp_path)
    assert config.schedules.ingest_interval.total_seconds() == 600
