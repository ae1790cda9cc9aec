"""The fuzz suite's short form: hypothesis draws hostile and careless input for every CLI command and every
file format and query language t2c reads, with a fixed seed and a few hundred examples in all
(``bench/fuzz.py`` runs the long form, 10,000 inputs, and reports the figures).

Every input runs against a database that already holds untrusted text: the tiny monitor with concepts
named ``</script><t2cinj2>``, ``[/]`` and ``[bold]t2cmk1[/bold]``, a batch id ``probe[/] <t2cinj15> ...``,
image files named with newlines and escape codes, manifest values with Markdown and Slack markup, an
audit with its report, evidently pages and alerts (``fuzz.world.FuzzWorld``). The properties
(``fuzz.checks.check_outcome`` and friends; a failure names the property):

1. ``outcome``: exit 0, or a refusal, exit 2 for a usage or configuration error (1 for an OS error) with
   a line ``error: ...`` (or click's usage message); never a traceback; a refusal prints no more than
   20 kB beyond what it repeats of its arguments. A reader of the library returns or raises its
   documented error (``T2CError``; ``ValueError`` for durations and crons) whose first line names the file.
2. ``hang``, ``memory``: no input runs past its bound (30 s a command, 10 s a reader) or past 2 GB.
3. ``database``: a refused command leaves every table's row count as it was (a failed audit, recorded by
   design, excepted).
4. ``html``, ``markdown``: every page written (audit and dataset reports, evidently's page, search contact
   sheets) parses with ``html.parser`` holding untrusted text only as text: no element, attribute or
   script made by the injected ``t2cinj`` markers; Markdown digests and webhook bodies hold no live link,
   raw HTML or Slack mention.
5. ``terminal``: untrusted text is printed as written: rich markup (``[bold]t2cmk1[/bold]``) and emoji
   codes (``grass:+1``) literally, no raw control character (ESC, CR, C1), no forged line; no hint names
   a command that does not exist.
6. ``secret``: no planted credential (``t2csecret..``) is printed, kept by an error message or written.

The corpus that hypothesis would not find by itself (bombs, encodings, huge and deep files, special
files, credentials in URLs) and the regression tests of issue 28's defects are in ``test_fuzz_corpus.py``.
"""

from __future__ import annotations

import pytest
from fuzz.checks import Violation
from fuzz.commands import Case, leaf_commands
from fuzz.session import Fuzzer
from fuzz.strategies import CRONS, DURATIONS, YAML_VALUES, FileArg, hostile_text
from fuzz.world import FuzzWorld
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXAMPLES = settings(derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))


@pytest.fixture
def fuzzer(active_fuzz_world: FuzzWorld) -> Fuzzer:
    """A fuzzer over the hostile world (tests/conftest.py's ``fuzz_world``), its settings active."""
    return Fuzzer(active_fuzz_world)


def report(violations: list[Violation], limit: int = 40) -> str:
    distinct = sorted({str(v)[:600] for v in violations})
    return f"{len(distinct)} distinct violations:\n" + "\n".join(distinct[:limit])


def test_every_command_and_reader_is_fuzzed(fuzzer):
    leaves = set(leaf_commands())
    assert len(leaves) >= 40
    assert set(fuzzer.commands) == leaves
    assert {"monitor file", "bank file", "manifest", "feature file", "class list", "search query",
            "duration", "cron", "database url"} <= set(fuzzer.readers)


def test_the_hostile_world_is_stored_reported_and_listed_safely(fuzz_world):
    """Setting the world up is itself a fuzz run: every setup command exits 0 and holds P1-P5, every page
    and webhook body it produced holds P4."""
    assert len(fuzz_world.audit_ids) == 1
    pages = sorted(p.name for p in fuzz_world.home.rglob("*.html"))
    assert {"index.html", "evidently.html"} <= set(pages) and any(p.startswith("dataset") for p in pages)
    assert not fuzz_world.violations, report(fuzz_world.violations)


def _run_examples(fuzzer: Fuzzer, strategy: st.SearchStrategy, examples: int, run) -> list[Violation]:
    """Run ``examples`` draws of ``strategy`` (fixed seed, no shrinking: each violation keeps its input)."""
    found: list[Violation] = []

    @settings(EXAMPLES, max_examples=examples)
    @given(strategy)
    def one(value) -> None:
        found.extend(run(value))

    one()
    return found


CHEAP = ("parse", "read")


@pytest.mark.parametrize("tiers", [CHEAP, ("model",)], ids=["cheap", "models"])
def test_every_command_holds_the_properties_for_hostile_arguments(fuzzer, tiers):
    """Each command a few times (those that only parse or read the database more), then a mix."""
    names = sorted(n for n, c in fuzzer.commands.items() if c.tier in tiers)
    found = []
    for name in names:
        found += _run_examples(fuzzer, fuzzer.case_strategy([name]), 3 if tiers == CHEAP else 2, fuzzer.run)
    found += _run_examples(fuzzer, fuzzer.case_strategy(names), 30 if tiers == CHEAP else 10, fuzzer.run)
    assert fuzzer.tally.commands == set(names)
    assert not found, report(found)


@pytest.mark.parametrize("reader", ["monitor file", "bank file", "manifest", "feature file", "class list",
                                    "search query", "search where", "duration", "cron", "world shift",
                                    "database url", "markdown text", "alert error text"])
def test_every_file_format_and_query_is_read_or_refused_by_name(fuzzer, reader):
    found = _run_examples(fuzzer, fuzzer.readers[reader].values, 12, lambda v: fuzzer.run_reader(reader, v))
    assert not found, report(found)


@pytest.mark.parametrize("key", ["name", "description", "schedules", "alerts", "retention", "decode"])
def test_monitor_files_with_hostile_values_are_applied_or_refused_by_key(fuzzer, key):
    """A monitor file with one hostile key, through `t2c monitor apply --check` and `t2c deployments list`."""
    import yaml

    base = fuzzer.world.fuzz_document()
    values = {"name": hostile_text(), "description": YAML_VALUES,
              "schedules": st.fixed_dictionaries({"audit_cron": CRONS, "ingest_interval": DURATIONS,
                                                  "inbox": st.just(str(fuzzer.world.work))}),
              "alerts": st.fixed_dictionaries({"quiet_period": DURATIONS, "report_url": hostile_text()}),
              "retention": st.fixed_dictionaries({"vectors": DURATIONS, "cron": CRONS}),
              "decode": st.fixed_dictionaries({"guided": YAML_VALUES, "words": YAML_VALUES})}[key]

    def case(value) -> Case:
        document = {**base, "monitors": [{**base["monitors"][0], key: value}]}
        data = FileArg(".yaml", yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass"))
        return Case("monitor apply", (data, "--check"))

    found = _run_examples(fuzzer, values.map(case), 6, fuzzer.run)
    found += _run_examples(fuzzer, values.map(case).map(lambda c: Case("deployments list", c.args[:1])), 6,
                           fuzzer.run)
    assert not found, report(found)
