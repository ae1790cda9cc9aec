"""The corpus run through the CLI: every file format saved every hostile way, special files, and
database URLs holding a planted credential."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .checks import Violation, check_outcome, command_line, table_counts
from .corpus import credential_urls, hostile_file_variants, make_special_files
from .runner import Outcome, invoke, run_t2c
from .tiny_monitor import TINY_BANK, write_images
from .world import FuzzWorld

STRICT_VARIANTS = frozenset({"binary", "png-bytes", "invalid-utf8", "huge", "fifo", "device"})
"""Variants every reader must refuse (exit 2, ``error: <path> ...``); the others may also be read."""
STRICT_STRUCTURED = frozenset({"deep", "billion_laughs", "bank_bomb", "merge_keys", "recursive_alias", "python_tag"})
"""Variants a reader of YAML or JSON must refuse too (a plain-text reader reads them as lines)."""
IN_A_PROCESS = frozenset({"billion_laughs", "bank_bomb", "merge_keys", "recursive_alias", "fifo", "device"})
"""Variants that could take gigabytes or block for ever before the fixes: run as real, bounded processes."""


@dataclass(frozen=True)
class FileCase:
    format: str
    variant: str
    path: Path
    argv: list[str]

    @property
    def strict(self) -> bool:
        structured = self.path.suffix in (".yaml", ".yml", ".jsonl")
        return (self.variant in STRICT_VARIANTS or (structured and self.variant in STRICT_STRUCTURED)
                or self.format in ("feature file", "decode vectors"))


def _file_formats(world: FuzzWorld) -> dict[str, tuple[str, str, Callable[[str], list[str]]]]:
    import yaml

    clip = yaml.safe_load(world.monitor_file.read_text())["monitors"][0]["clip"]
    out, bank = str(world.work / "out" / "encoded"), str(world.root / "config" / "fuzz-bank.yaml")
    pngs = sorted(str(p) for p in (world.root / "images" / "ref-1").glob("*.png"))[:2]
    encode = ["concepts", "encode", "--clip", clip, "--out", out]
    return {
        "monitor file": (".yaml", yaml.safe_dump(world.fuzz_document()), lambda p: ["monitor", "apply", "--check", p]),
        "bank file": (".yaml", TINY_BANK, lambda p: [*encode, p]),
        "bank text": (".txt", "red\ngreen | grass\n", lambda p: [*encode, p]),
        "class list": (".txt", "cat\ndog\n", lambda p: [*encode, bank, "--classes-file", p]),
        "manifest jsonl": (".jsonl", "".join(json.dumps({"uri": u, "label": "x"}) + "\n" for u in pngs),
                           lambda p: ["ingest", p, "-m", "tiny", "--no-flow", "--batch-id", f"corpus {Path(p).stem}"]),
        "manifest csv": (".csv", "uri,label\n" + "".join(f"{u},x\n" for u in pngs),
                         lambda p: ["ingest", p, "-m", "tiny", "--no-flow", "--batch-id", f"corpus {Path(p).stem}"]),
        "feature file": (".safetensors", "X", lambda p: ["aligner", "fit", "--features", p, "--out", out + "-aligner"]),
        "decode vectors": (".npy", "X", lambda p: ["decode", "-m", "tiny", "--vectors", p, "--bank-only"]),
    }


def file_cases(world: FuzzWorld) -> list[FileCase]:
    """Each file format the CLI reads, written every hostile way (``hostile_file_variants``), and a FIFO and
    ``/dev/zero`` given in its place, with the command that reads it."""
    cases = []
    for name, (suffix, valid, argv) in _file_formats(world).items():
        stem = name.replace(" ", "-")
        variants = hostile_file_variants(world.work / "corpus" / stem, stem, suffix, valid)
        if suffix not in (".yaml", ".yml"):
            variants = {k: v for k, v in variants.items() if k not in ("python_tag",)}
        fifo = world.work / "corpus" / stem / f"{stem}-fifo{suffix}"
        if not fifo.exists():
            os.mkfifo(fifo)
        variants |= {"fifo": fifo, "device": Path("/dev/zero")}
        cases += [FileCase(name, variant, path, argv(str(path))) for variant, path in sorted(variants.items())]
    return cases


def check_file_case(case: FileCase, outcome: Outcome, before: dict[str, int], after: dict[str, int],
                    time_bound_s: float) -> list[Violation]:
    """P1 to P3 for a hostile file: read, or refused with exit 2 and a first line ``error: ...`` that names
    the file (always refused when ``case.strict``), nothing stored by a refusal, nothing executed."""
    where = f"{case.format} [{case.variant}]: {command_line(outcome.argv)}"
    found = [Violation(v.prop, where, v.detail) for v in
             check_outcome(outcome, inputs=outcome.argv, exits=(0, 2), time_bound_s=time_bound_s)]
    first = next((line.strip() for line in outcome.stderr.splitlines() if line.strip()), "")
    if outcome.exit_code == 0 and case.strict:
        found.append(Violation("outcome", where, "read as if it were a valid file"))
    if outcome.exit_code == 2 and not (first.startswith("error:") and str(case.path) in first):
        found.append(Violation("outcome", where, f"refused without naming the file first: {first[:200]!r}"))
    if outcome.exit_code not in (0, None) and before != after:
        found.append(Violation("database", where, "a refused file changed rows: "
                               f"{ {t: (before.get(t), n) for t, n in after.items() if before.get(t) != n} }"))
    if (Path.cwd() / "t2c-fuzz-pwned").exists() or (case.path.parent / "t2c-fuzz-pwned").exists():
        found.append(Violation("outcome", where, "a YAML tag ran a command"))
    return found


def run_file_case(world: FuzzWorld, case: FileCase, *, time_bound_s: float = 30.0) -> list[Violation]:
    """Run a hostile file's command (a real, bounded process for ``IN_A_PROCESS`` variants) and check it."""
    before = table_counts(world.engine)
    if case.variant in IN_A_PROCESS:
        outcome = run_t2c(case.argv, env=world.env(), timeout=time_bound_s, cwd=world.work)
    else:
        outcome = invoke(case.argv, timeout=time_bound_s)
    return check_file_case(case, outcome, before, table_counts(world.engine), time_bound_s)


def special_files_ingest(world: FuzzWorld, *, timeout: float = 90.0) -> tuple[Outcome, dict[str, str],
                                                                                list[Violation]]:
    """A real ``t2c ingest`` of a folder holding two images, a FIFO, a socket, a link to ``/dev/zero``,
    dangling and looping links and an unreadable file: it must exit, store the batch, and record the
    FIFO, socket and device ``refused`` (never opened). Returns the outcome, each file's failure
    reason, and what broke."""
    import uuid

    from sqlalchemy import text

    batch = f"special-{uuid.uuid4().hex[:8]}"
    folder = world.work / batch
    write_images(folder, 2, seed=7)
    make_special_files(folder)
    outcome = run_t2c(["ingest", str(folder), "-m", "tiny", "--no-flow", "--batch-id", batch], env=world.env(),
                      timeout=timeout, cwd=world.work)
    with world.engine.connect() as conn:
        rows = conn.execute(text("SELECT i.uri, i.failure_reason FROM image i JOIN batch b ON b.id = i.batch_id "
                                 "WHERE b.external_id = :b"), {"b": batch}).all()
    reasons = {Path(r.uri).name: r.failure_reason or "ok" for r in rows}
    where = command_line(outcome.argv)
    found = check_outcome(outcome, inputs=outcome.argv, exits=(0,), time_bound_s=timeout)
    for name in ("fifo.png", "socket.png", "zero.png"):
        if not reasons.get(name, "").startswith("refused"):
            found.append(Violation("outcome", where, f"{name} recorded {reasons.get(name, 'not at all')!r}, "
                                   "not refused"))
    return outcome, reasons, found


def database_url_cases(world: FuzzWorld) -> list[tuple[str, list[str], dict[str, str]]]:
    """(where the credential is, argv, env): every command that shows or opens the database, under a
    database URL holding a planted credential in each place a URL can hold one."""
    commands = [["db", "url"], ["db", "status"], ["db", "up", "--json"], ["monitor", "list"],
                ["batches", "list", "-m", "tiny"]]
    return [(where, argv, {"T2C_DATABASE_URL": url}) for where, url, _ in credential_urls(world.database_url)
            for argv in commands]
