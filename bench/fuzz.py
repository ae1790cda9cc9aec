"""Fuzzing with figures: hostile and careless input into every CLI command and every file format t2c reads.

It starts its own embedded PostgreSQL, builds a tiny monitor (random tiny models, seconds), stores it
under hostile names (concepts such as ``</script><t2cinj2>`` and ``[/]``, a batch id ``probe[/] ...``,
file names with newlines and escape codes, manifest values with Markdown and Slack markup), ingests
four batches, audits twice (reports, evidently pages, alerts to a local webhook and to one that is not
there) and writes a dataset report; then it runs:

* the hostile corpus through the CLI (``tests/hostile`` and ``fuzz.corpus_cases.file_cases``): every file
  format written in other encodings, binary, 50 MB, nested 100,000 deep, as YAML bombs and tags, and a
  FIFO or ``/dev/zero`` in its place (bombs and special files as real processes, bounded in time and
  memory); a real ``t2c ingest`` of a folder holding a FIFO, a socket and a device; the database commands
  under URLs holding a planted credential in every place a URL can hold one;
* ``--inputs`` inputs drawn by hypothesis: about half are files and queries fed to the library's readers
  and parsers directly (cheap), the rest whole command lines of every CLI command, run in this process
  (typer's CliRunner) within ``--timeout`` seconds each;
* a last sweep of every file under the home and every table for the planted credentials.

Each input is checked for the properties of ``tests/fuzz`` (its package docstring): an exit code of 0 or a refusal
(2, or 1 for an OS error) whose first line names the problem, no traceback, no rich MarkupError, no hang,
memory under 2 GB, no row changed by a refused command, no injected element in any HTML page, untrusted
text printed as written, no credential printed or written.

    python bench/fuzz.py [--inputs 10000] [--seed 0] [--timeout 30] [--keep]

Progress goes to stderr, then every distinct violation; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from fuzz.checks import Violation, check_outcome, rows_holding_secrets, scan_tree_for_secrets  # noqa: E402
from fuzz.commands import leaf_commands  # noqa: E402
from fuzz.corpus_cases import IN_A_PROCESS, database_url_cases, file_cases, run_file_case, special_files_ingest  # noqa: E402
from fuzz.runner import invoke, own_peak_mb, peak_rss_mb  # noqa: E402
from fuzz.session import Fuzzer  # noqa: E402
from fuzz.tiny_monitor import build_tiny_models  # noqa: E402
from fuzz.world import FuzzWorld  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

READER_SHARE = 0.5
TIER_WEIGHTS = {"parse": 2, "read": 4, "model": 1}  # cheap commands many times, those loading models fewer


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_world(root: Path) -> FuzzWorld:
    from t2c_monitor.store.embedded import start_embedded
    from t2c_monitor.store.engine import normalise_url

    started = time.perf_counter()
    url = normalise_url(start_embedded(root / "pgdata", delete_on_exit=True))
    models = build_tiny_models(root / "models")
    say(f"embedded PostgreSQL and tiny models ready in {time.perf_counter() - started:.0f} s")
    return FuzzWorld(root / "world", url, models)


def run_corpus(world: FuzzWorld, fuzzer: Fuzzer) -> None:
    """The hostile corpus through the CLI; its inputs and violations count in ``fuzzer.tally``."""
    tally = fuzzer.tally
    cases = file_cases(world)
    say(f"corpus: {len(cases)} hostile files through the CLI ({len(IN_A_PROCESS)} kinds as real processes)")
    for case in cases:
        started = time.perf_counter()
        found = run_file_case(world, case)
        if time.perf_counter() - started > 5:
            say(f"  {case.format} [{case.variant}]: {time.perf_counter() - started:.1f} s")
        fuzzer.record(case.argv[0] if case.argv[0] != "concepts" else "concepts encode",
                       time.perf_counter() - started, found, commands=True)
    say("corpus: a real `t2c ingest` of a folder with a FIFO, a socket and a link to /dev/zero")
    outcome, reasons, found = special_files_ingest(world)
    fuzzer.record("ingest", outcome.seconds, found, commands=True)
    say(f"  exit {outcome.exit_code} after {outcome.seconds:.1f} s; reasons: "
        + "; ".join(f"{k}: {v[:60]}" for k, v in sorted(reasons.items())))
    url_cases = database_url_cases(world)
    say(f"corpus: {len(url_cases)} database commands under URLs holding a credential")
    for _where, argv, env in url_cases:
        outcome = invoke(argv, timeout=fuzzer.timeout, env=env)
        fuzzer.record(" ".join(argv[:2]) if argv[0] == "db" else argv[0] + " list", outcome.seconds,
                       check_outcome(outcome, inputs=argv, time_bound_s=fuzzer.timeout), commands=True)
    say(f"corpus done: {tally.inputs} inputs, {len(tally.violations)} violations so far")


def plan(fuzzer: Fuzzer) -> st.SearchStrategy[tuple[str, str]]:
    """("reader", name) or ("command", name), weighted by cost."""
    readers = [("reader", name) for name in sorted(fuzzer.readers)]
    commands = [("command", c.name) for c in sorted(fuzzer.commands.values(), key=lambda c: c.name)
                for _ in range(TIER_WEIGHTS[c.tier])]
    n_readers = round(len(commands) * READER_SHARE / (1 - READER_SHARE))
    return st.sampled_from(commands + [readers[i % len(readers)] for i in range(n_readers)])


def fuzz(fuzzer: Fuzzer, inputs: int, seed: int) -> None:
    """Every command and reader once, then ``inputs`` drawn by hypothesis (a weighted mix)."""
    started, last, first = time.perf_counter(), [0.0], fuzzer.tally.inputs
    cases = {name: fuzzer.case_strategy([name]) for name in fuzzer.commands}

    def run(kind: str, name: str, data: st.DataObject) -> None:
        if kind == "reader":
            fuzzer.run_reader(name, data.draw(fuzzer.readers[name].values, label=name))
        else:
            fuzzer.run(data.draw(cases[name], label=name))
        now = time.perf_counter()
        if now - last[0] > 15:
            last[0] = now
            tally = fuzzer.tally
            say(f"[{tally.inputs - first}/{inputs}] {now - started:.0f} s, {len(tally.violations)} violations "
                f"({dict(collections.Counter(v.prop for v in tally.violations))}), slowest {tally.max_seconds:.1f} s "
                f"({tally.slowest})")

    def drawn(examples: int, what: st.SearchStrategy[tuple[str, str]]) -> None:
        @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @hypothesis_seed(seed)
        @given(what, st.data())
        def one(chosen: tuple[str, str], data: st.DataObject) -> None:
            run(*chosen, data)

        one()

    every = [("command", name) for name in sorted(fuzzer.commands)] + [("reader", name) for name in fuzzer.readers]
    for chosen in every:
        drawn(1, st.just(chosen))
    drawn(max(inputs - len(every), 1), plan(fuzzer))


def sweep(world: FuzzWorld, fuzzer: Fuzzer, root: Path) -> None:
    """The planted credentials, searched in every file under the root and every table; every page again."""
    for path, secrets in scan_tree_for_secrets(root).items():
        fuzzer.tally.violations.append(Violation("secret", "files", f"{', '.join(secrets)} in {path}"))
    for table, rows in rows_holding_secrets(world.engine).items():
        fuzzer.tally.violations.append(Violation("secret", "database", f"{rows} rows of {table}"))
    fuzzer.tally.violations += world.page_violations(fuzzer.pages_seen)


def figures(fuzzer: Fuzzer, leaves: list[str], seconds: float) -> dict:
    tally = fuzzer.tally
    covered = sorted(set(leaves) & tally.commands)
    distinct = sorted({(v.prop, v.command[:160], v.detail[:160]) for v in tally.violations})
    return {
        "inputs_tried": tally.inputs,
        "commands_covered": f"{len(covered)}/{len(leaves)}",
        "commands_total": len(leaves),
        "commands_missed": sorted(set(leaves) - tally.commands),
        "readers_covered": f"{len(tally.readers)}/{len(fuzzer.readers)}",
        "tracebacks": sum(v.prop == "outcome" and v.detail.startswith("traceback") for v in tally.violations),
        "hangs": tally.count("hang"),
        "max_seconds": round(tally.max_seconds, 2),
        "slowest": tally.slowest,
        "peak_rss_mb": round(own_peak_mb()),
        "peak_child_rss_mb": round(peak_rss_mb()),
        "html_injections": tally.count("html"),
        "markdown_injections": tally.count("markdown"),
        "secrets_found": tally.count("secret"),
        "markup_crashes": tally.count("markup"),
        "db_changed_by_refusals": tally.count("database"),
        "bad_refusals": sum(v.prop == "outcome" and not v.detail.startswith("traceback") for v in tally.violations),
        "terminal_problems": tally.count("terminal"),
        "memory_over_2gb": tally.count("memory"),
        "distinct_violations": len(distinct),
        "seconds": round(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs drawn by hypothesis (the corpus adds ~150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one input may run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args()
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="t2c-fuzz-"))
    world = None
    try:
        world = make_world(root)
        with world.active():
            world.root.mkdir(parents=True, exist_ok=True)
            os.chdir(world.root)
            setup = world.populate(log=lambda m: say(f"setup: {m[:160]}"))
            fuzzer = Fuzzer(world, timeout=args.timeout)
            fuzzer.tally.violations += setup
            run_corpus(world, fuzzer)
            fuzz(fuzzer, args.inputs, args.seed)
            sweep(world, fuzzer, root)
            result = figures(fuzzer, leaf_commands(), time.perf_counter() - started)
        for jump in fuzzer.tally.memory_jumps:
            say(f"memory: {jump}")
        distinct = {(v.prop, v.command[:300], v.detail[:300]) for v in fuzzer.tally.violations}
        for prop, command, detail in sorted(distinct):
            say(f"VIOLATION [{prop}] {command}\n    {detail}")
    finally:
        os.chdir(Path(__file__).resolve().parents[1])
        if args.keep:
            say(f"kept {root}")
        else:
            with contextlib.suppress(Exception):
                world.engine.dispose()  # type: ignore[union-attr]
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
