"""The hostile corpus that hypothesis will not write by itself (``tests/hostile`` and ``tests/fuzz``), through
the CLI, and a regression test for each defect of issue 28:

* every file format t2c reads (monitor and bank files, class lists, manifests, feature and vector files)
  in other encodings, binary, 50 MB, nested 100,000 deep, as YAML bombs and tags, and a FIFO or
  ``/dev/zero`` in its place: read, or refused with exit 2 and ``error: <path> ...``, storing nothing and
  running nothing (bombs and special files as real processes, bounded in time and memory);
* a FIFO, a socket and a device in an ingest folder: recorded ``refused``, and the process exits;
* a database URL holding a credential in any place a URL can hold one: never printed;
* text from outside is never markup: batch ids and concepts with ``[/]``, ``grass:+1``, control
  characters; reports hold ``</script>`` and ``onerror=`` as text, in a parser and in Chromium;
* smaller defects: ``ingest_interval: 0s`` refused, control characters in batch ids refused,
  ``t2c alerts retry`` exits non-zero when every retry failed, hints name commands that exist.

The properties are those of ``test_fuzz.py`` (see ``tests/fuzz``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fuzz.checks import Violation, check_outcome, html_injections, secrets_in, table_counts, unknown_hints
from fuzz.corpus import HTML_MARKER
from fuzz.corpus_cases import IN_A_PROCESS, database_url_cases, file_cases, run_file_case, special_files_ingest
from fuzz.runner import invoke
from fuzz.world import HOSTILE_BATCH, FuzzWorld

SUBPROCESS_CASES = {("monitor file", v) for v in ("billion_laughs", "merge_keys", "recursive_alias", "fifo", "device")}
SUBPROCESS_CASES |= {("bank file", v) for v in ("bank_bomb", "fifo", "device")}
SUBPROCESS_CASES |= {("manifest jsonl", v) for v in ("fifo", "device")}
"""The bombs and special files run here as real processes (bench/fuzz.py runs every format's)."""


@pytest.fixture
def world(active_fuzz_world: FuzzWorld) -> FuzzWorld:
    """The hostile world (tests/conftest.py's ``fuzz_world``), its settings active."""
    return active_fuzz_world


def lines(violations: list[Violation]) -> str:
    return "\n".join(sorted({str(v)[:500] for v in violations}))


def test_hostile_files_are_read_or_refused_naming_the_file(world):
    cases = [c for c in file_cases(world) if c.variant not in IN_A_PROCESS]
    assert len({c.format for c in cases}) == 8 and len(cases) > 80
    found = [v for case in cases for v in run_file_case(world, case)]
    assert not found, lines(found)


def test_bombs_and_special_files_are_refused_without_blocking_or_growing(world):
    """Real processes, killed past 30 s or 2 GB: a YAML bomb, a FIFO or /dev/zero given as a file must be
    refused quickly, naming the file."""
    cases = [c for c in file_cases(world) if (c.format, c.variant) in SUBPROCESS_CASES]
    assert len(cases) == len(SUBPROCESS_CASES)
    with ThreadPoolExecutor(max_workers=3) as pool:
        found = [v for vs in pool.map(lambda c: run_file_case(world, c), cases) for v in vs]
    assert not found, lines(found)


def test_yaml_tags_run_nothing(world):
    (case,) = [c for c in file_cases(world) if (c.format, c.variant) == ("monitor file", "python_tag")]
    outcome = invoke(case.argv)
    assert outcome.exit_code == 2 and "error:" in outcome.stderr
    assert not (world.work / "t2c-fuzz-pwned").exists() and not Path("t2c-fuzz-pwned").exists()


def test_special_files_in_an_ingest_folder_are_refused_and_the_process_exits(world):
    outcome, reasons, found = special_files_ingest(world, timeout=60)
    assert not outcome.hung, f"t2c ingest still running after {outcome.seconds:.0f} s: {reasons}"
    assert reasons["img-0000.png"] == reasons["img-0001.png"] == "ok"
    assert not found, lines(found) + f"\nreasons: {reasons}"


def test_database_urls_never_show_their_credentials(world):
    found = []
    for where, argv, env in database_url_cases(world):
        outcome = invoke(argv, env=env)
        found += [Violation(v.prop, f"{where}: {v.command}", v.detail)
                  for v in check_outcome(outcome, inputs=argv)]
    assert not found, lines(found)


@pytest.mark.parametrize("batch", ["a\nt2cfrg5: forged", "\x1b[2Jcleared", "back\rt2cfrg6", "bell\x07", "del\x7f",
                                   "csi\x9b31m"])
def test_batch_ids_with_control_characters_are_refused_and_store_nothing(world, batch):
    before = table_counts(world.engine)
    outcome = invoke(["ingest", str(world.root / "images" / "ref-1"), "-m", "tiny", "--no-flow",
                        "--batch-id", batch])
    assert outcome.exit_code == 2, outcome.output
    assert outcome.stderr.lstrip().startswith("error:") and "batch" in outcome.stderr.splitlines()[0].lower()
    assert not check_outcome(outcome, inputs=outcome.argv)
    assert table_counts(world.engine) == before


@pytest.mark.parametrize("interval", ["0s", "0", "-1h", "0.0000001s"])
def test_an_ingest_interval_of_zero_is_refused(world, interval):
    import yaml

    document = world.fuzz_document()
    document["monitors"][0]["schedules"] = {"inbox": str(world.root / "images" / "ref-1"),
                                            "ingest_interval": interval}
    path = world.work / f"interval-{len(interval)}.yaml"
    path.write_text(yaml.safe_dump(document))
    for argv in (["monitor", "apply", "--check", str(path)], ["deployments", "list", str(path)]):
        outcome = invoke(argv)
        assert outcome.exit_code == 2 and "ingest_interval" in outcome.stderr, outcome.output


def test_alerts_retry_exits_non_zero_when_every_retry_failed(world):
    """The world's `dead` channel (a webhook URL with a token, to a port nobody listens on) failed."""
    outcome = invoke(["alerts", "retry", "-m", "tiny"])
    assert outcome.exit_code not in (0, None), outcome.output
    assert "failed" in outcome.output and not secrets_in(outcome.output)
    assert not check_outcome(outcome, inputs=outcome.argv, result_exit=outcome.exit_code)


def test_square_brackets_emoji_codes_and_control_characters_print_as_written(world):
    """`probe[/]` as a batch id, `[/]` and `[bold]t2cmk1[/bold]` as concepts, `grass:+1` as a query, file
    names with a newline and ESC: printed literally by every command that lists them."""
    runs = {"batches": ["batches", "list", "-m", "tiny"], "audits": ["audit", "list", "-m", "tiny"],
            "history": ["audit", "history", "-m", "tiny", "-c", "[/]"],
            "search": ["search", "-m", "tiny", "grass:+1", "[bold]t2cmk1[/bold]:+0", "--top", "50"],
            "text": ["search", "-m", "tiny", "--text", "[/] probe", "--top", "50"],
            "audit": ["audit", "-m", "tiny", "--no-flow", "--batches", HOSTILE_BATCH]}
    outcomes = {name: invoke(argv) for name, argv in runs.items()}
    assert all(o.exit_code == 0 for o in outcomes.values()), {n: o.output[-300:] for n, o in outcomes.items()}
    assert HOSTILE_BATCH in outcomes["batches"].output
    assert "grass:+1" in outcomes["search"].output and "[bold]t2cmk1[/bold]" in outcomes["search"].output
    found = [v for o in outcomes.values() for v in check_outcome(o, inputs=o.argv + world.stored_strings())]
    assert not found, lines(found)


def test_hints_name_commands_that_exist(world):
    outcome = invoke(["search", "-m", "tiny", "--text", "red"])
    assert outcome.exit_code == 0 and "--index build" in outcome.output, outcome.output
    assert not unknown_hints(outcome.output)
    assert unknown_hints("build one with `t2c search index --monitor tiny`") == ["t2c search index"]


def test_evidently_and_our_reports_hold_injected_markup_as_text(world):
    pages = [p for p in world.home.rglob("*.html")]
    evidently = [p for p in pages if p.name == "evidently.html"]
    assert evidently and all(HTML_MARKER in p.read_text() for p in evidently)  # the names are there, as text
    found = {str(p): html_injections(p.read_text()) for p in pages}
    assert not any(found.values()), found


@pytest.mark.skipif(__import__("browser").chromium() is None, reason="chromium is not installed")
def test_reports_run_no_injected_code_in_chromium(world):
    """A real browser: the audit report, evidently's page and the dataset report open without a dialog or an
    error from injected code (t2cinj3() and friends would throw: they are not defined)."""
    from browser import open_page

    audit = world.home / "reports" / "tiny" / f"audit-{world.audit_ids[-1]}"
    dataset = next((world.home / "reports" / "tiny" / "datasets").glob("*.html"))
    for page in (audit / "index.html", audit / "evidently.html", dataset):
        visit = open_page(page, timeout=90)
        assert not visit.dialogs, (page, visit.dialogs)
        assert not [e for e in visit.console_errors if HTML_MARKER in e], (page, visit.console_errors)
        assert HTML_MARKER in visit.text or page.name == "evidently.html"
