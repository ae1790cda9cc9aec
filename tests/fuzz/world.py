"""The world fuzzed: a database holding the tiny monitor under hostile names, with batches, a
baseline, an audit (its report, evidently page and alerts) and a dataset report."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import Violation, check_outcome, command_line, last_line, markdown_injections, scan_pages
from .corpus import SECRET_MARKER
from .runner import invoke
from .tiny_monitor import HOSTILE_CONCEPTS, TINY_BANK, monitor_document, write_images

HOSTILE_FILE_NAMES = ["[bold]t2cmk7[/bold]-NNNN.png", "<t2cinj13>-NNNN.png", "a\nt2cfrg3-NNNN.png",
                      "\x1b[2J-NNNN.png", "grass:+1-NNNN.png", "' onmouseover='t2cinj14-NNNN.png", "[/]-NNNN.png"]
HOSTILE_BATCH = "probe[/] <t2cinj15> [bold]t2cmk8[/bold] grass:+1"
MANIFEST_BATCH = "manifest </script><t2cinj17>"
HOSTILE_META = {"label": "<t2cinj16>", "[bold]t2cmk9[/bold]": "grass:+1", "note": "\x1b[2J a\nt2cfrg4 \r",
                "link": "[x](javascript:t2cinj11) <!channel>"}
HOOK_SECRET, DEAD_SECRET = f"{SECRET_MARKER}90x", f"{SECRET_MARKER}91x"


@dataclass
class FuzzWorld:
    root: Path
    database_url: str
    models: Path
    receiver: Any = None
    audit_ids: list[int] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    _engine: Any = None
    _bodies_checked: int = 0

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def monitor_file(self) -> Path:
        return self.root / "config" / "monitors.yaml"

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from sqlalchemy import create_engine

            from t2c_monitor.store.engine import normalise_url

            self._engine = create_engine(normalise_url(self.database_url), pool_size=1)
        return self._engine

    def env(self) -> dict[str, str]:
        from t2c_monitor.receiver import WebhookReceiver

        if self.receiver is None:
            self.receiver = WebhookReceiver()
        return {"T2C_HOME": str(self.home), "T2C_DATABASE_URL": self.database_url,
                "T2C_MODELS": str(self.root / "model-cache"),
                "T2C_FUZZ_WEBHOOK": f"{self.receiver.url}?t={HOOK_SECRET}",
                "T2C_FUZZ_DEAD_WEBHOOK": f"http://127.0.0.1:9/hook?t={DEAD_SECRET}", "COLUMNS": "1000"}

    @contextlib.contextmanager
    def active(self) -> Iterator[FuzzWorld]:
        """This world's settings in the environment (restored after)."""
        from t2c_monitor.settings import reset_settings_cache

        saved = dict(os.environ)
        os.environ.update(self.env())
        reset_settings_cache()
        try:
            yield self
        finally:
            os.environ.clear()
            os.environ.update(saved)
            reset_settings_cache()

    def monitor_sections(self, bank: Path) -> dict[str, Any]:
        return {
            "bank": str(bank), "description": "[bold]t2cmk1[/bold] <t2cinj1> grass:+1",
            "ingest": {"batch_size": 16, "chunk_size": 64, "decode_threads": 2, "decode_timeout_s": 5},
            "audit": {"evidently": True, "alpha": 0.5, "min_ks": 0, "min_effect_size": 0, "last": 1, "vectors": 100},
            "alerts": {"channels": ["hook", "dead", "log"], "retries": 0, "quiet_period": "1s"},
            "decode": {"bpe_words": False},
            "channels": {"hook": {"type": "webhook", "url_env": "T2C_FUZZ_WEBHOOK"},
                         "dead": {"type": "webhook", "url_env": "T2C_FUZZ_DEAD_WEBHOOK", "timeout_s": 2},
                         "log": {"type": "file", "path": str(self.root / "alerts.jsonl")}},
        }

    def write_inputs(self) -> None:
        """The bank (hostile concept names), the monitors file and the image folders."""
        import yaml

        bank = self.root / "config" / "bank.yaml"
        bank.parent.mkdir(parents=True, exist_ok=True)
        bank.write_text(TINY_BANK + "".join(f"  - {json.dumps(c)}\n" for c in HOSTILE_CONCEPTS))
        self.monitor_file.write_text(yaml.safe_dump(monitor_document(self.models, **self.monitor_sections(bank)),
                                                    allow_unicode=True))
        images = self.root / "images"
        write_images(images / "ref-1", 40, seed=1)
        write_images(images / "ref-2", 40, seed=2)
        write_images(images / "day", 28, seed=3, dark=True, names=HOSTILE_FILE_NAMES)
        listed = write_images(images / "listed", 24, seed=4)
        rows = [{"uri": p.name, **HOSTILE_META} for p in listed]
        (images / "listed" / "batch.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for i, label in enumerate(("cat", "[bold]t2cmk10[/bold]", "<t2cinj19>")):
            write_images(images / "labelled" / label, 10, seed=10 + i, dark=i == 1)
        self.work.mkdir(parents=True, exist_ok=True)

    def stored_strings(self) -> list[str]:
        """The untrusted text this world stored (concepts, batch ids, file names, manifest values)."""
        return [*HOSTILE_CONCEPTS, HOSTILE_BATCH, MANIFEST_BATCH, *HOSTILE_FILE_NAMES,
                *(f"{k} {v}" for k, v in HOSTILE_META.items()), "[bold]t2cmk1[/bold] <t2cinj1> grass:+1"]

    def fuzz_document(self) -> dict[str, Any]:
        """The monitors document that fuzzed monitor files vary: a monitor ``fuzzed`` on the tiny models with
        a bank of its own (so a fuzzed apply never changes ``tiny``, nor the models' folder)."""
        bank = self.root / "config" / "fuzz-bank.yaml"
        if not bank.exists():
            bank.parent.mkdir(parents=True, exist_ok=True)
            bank.write_text(TINY_BANK)
        document = monitor_document(self.models, bank=str(bank), description="")
        document["monitors"][0]["name"] = "fuzzed"
        return document

    def setup_commands(self) -> list[list[str]]:
        images = self.root / "images"
        return [
            ["monitor", "apply", str(self.monitor_file)],
            ["ingest", str(images / "ref-1"), "-m", "tiny", "--no-flow", "--batch-id", "ref-1"],
            ["ingest", str(images / "ref-2"), "-m", "tiny", "--no-flow", "--batch-id", "ref-2"],
            ["baseline", "build", "-m", "tiny", "--batches", "ref-1,ref-2"],
            ["ingest", str(images / "day"), "-m", "tiny", "--no-flow", "--batch-id", HOSTILE_BATCH],
            ["ingest", str(images / "listed" / "batch.jsonl"), "-m", "tiny", "--no-flow", "--batch-id", MANIFEST_BATCH],
            ["audit", "-m", "tiny", "--no-flow", "--last", "2"],
            ["report", "dataset", "-m", "tiny", "--batches", HOSTILE_BATCH],
            ["search", "-m", "tiny", "grass:+0", "--html", str(self.work / "sheet.html")],
            ["cbm", "fit", str(images / "labelled"), "-m", "tiny", "--out", str(self.work / "cbm")],
            ["batches", "list", "-m", "tiny"],
            ["audit", "list", "-m", "tiny"],
            ["alerts", "list", "-m", "tiny"],
        ]

    def populate(self, log: Callable[[str], None] = lambda _: None) -> list[Violation]:
        """Apply the monitor, ingest four batches, build the baseline, audit the hostile two, write the reports,
        every step through the CLI; returns what the checks found on the way (kept in ``violations``)."""
        from sqlalchemy import text

        self.write_inputs()
        for argv in self.setup_commands():
            log(command_line(argv))
            outcome = invoke(argv, timeout=300)
            self.violations += check_outcome(outcome, inputs=argv, time_bound_s=300)
            if outcome.exit_code != 0:
                self.violations.append(Violation("outcome", command_line(argv), "a setup step failed: "
                                                 + last_line(outcome.error or outcome.output)))
        with self.engine.connect() as conn:
            self.audit_ids = list(conn.execute(text("SELECT id FROM audit WHERE status = 'done' ORDER BY id"))
                                  .scalars())
        self.violations += self.page_violations()
        return self.violations

    def page_violations(self, seen: dict[Path, float] | None = None) -> list[Violation]:
        """P4 over every page under the home and the work folder, and the webhook bodies received."""
        found = []
        for root in (self.home, self.work):
            for path, problems in scan_pages(root, seen).items():
                found += [Violation("markdown" if path.suffix == ".md" else "html", str(path), p) for p in problems]
        bodies = self.receiver.bodies if self.receiver else []
        fresh, self._bodies_checked = bodies[self._bodies_checked:], len(bodies)
        for body in fresh:
            for key in ("text", "subject", "markdown"):
                found += [Violation("markdown", f"webhook body {key!r}", p)
                          for p in markdown_injections(str(body.get(key, "")), slack_only=key != "markdown")]
        return found
