"""A fuzzing session over one world: runs cases, checks every property, keeps the figures."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from .checks import Violation, check_outcome, command_line, scan_tree_for_secrets, table_counts
from .commands import REFUSED, Case, Command, command_table
from .corpus import credential_urls
from .readers import check_reader, reader_table
from .runner import invoke, own_peak_mb
from .strategies import FileArg, materialise
from .world import FuzzWorld


@dataclass
class Tally:
    inputs: int = 0
    commands: set[str] = field(default_factory=set)
    readers: set[str] = field(default_factory=set)
    violations: list[Violation] = field(default_factory=list)
    max_seconds: float = 0.0
    slowest: str = ""
    memory_jumps: list[str] = field(default_factory=list)  # inputs that raised this process's peak by 200 MB

    def count(self, prop: str) -> int:
        return sum(v.prop == prop for v in self.violations)


class Fuzzer:
    """Runs cases against a populated ``FuzzWorld`` (whose settings must be active) and checks them."""

    def __init__(self, world: FuzzWorld, *, timeout: float = 30.0) -> None:
        self.world, self.timeout = world, timeout
        self.commands = command_table(world)
        self.readers = reader_table(world)
        self.tally = Tally()
        self._counts: dict[str, int] | None = None
        self.pages_seen: dict[Path, float] = {}
        self._serial = 0
        self._stored_chars: set[str] = set()

    def _folder(self) -> Path:
        self._serial += 1
        return self.world.work / "cases" / str(self._serial)

    def case_strategy(self, names: list[str] | None = None) -> st.SearchStrategy[Case]:
        """A case of one of the commands ``names`` (default: every command)."""
        chosen = [self.commands[n] for n in (names or sorted(self.commands))]
        urls = [(("T2C_DATABASE_URL", u),) for _, u, _ in credential_urls(self.world.database_url)]
        env = st.one_of(st.just(()), st.just(()), st.sampled_from(urls))

        def case(command: Command) -> st.SearchStrategy[Case]:
            extra = st.one_of(st.just([]), st.just([]), st.just([]), REFUSED)
            envs = env if command.name.startswith(("db ", "monitor list")) else st.just(())
            return st.tuples(command.args, extra, envs).map(lambda t: Case(command.name, tuple(t[0] + t[1]), t[2]))

        return st.sampled_from(chosen).flatmap(case)

    def run(self, case: Case) -> list[Violation]:
        """Run one case in this process and check P1 to P6; the figures go into ``tally``."""
        import shutil

        command = self.commands[case.command]
        folder, peak = self._folder(), own_peak_mb()
        argv = case.command.split() + materialise(list(case.args), folder)
        before = self._counts if self._counts is not None else table_counts(self.world.engine)
        outcome = invoke(argv, timeout=self.timeout, env=dict(case.env) or None)
        self._counts = table_counts(self.world.engine)
        texts = [a.data.decode(errors="replace") for a in case.args if isinstance(a, FileArg)]
        given = argv + texts + self.world.stored_strings() + ["".join(sorted(self._stored_chars))]
        found = check_outcome(outcome, inputs=given, time_bound_s=self.timeout, result_exit=command.result_exit)
        if outcome.exit_code == 0:  # what it stored may be printed by a later command
            self._stored_chars.update(ch for text in argv + texts for ch in text)
        refused = outcome.exit_code not in (0, None, command.result_exit)
        if refused and self._counts != before:
            changed = {t: (before.get(t), n) for t, n in self._counts.items() if before.get(t) != n}
            found.append(Violation("database", command_line(argv), f"a refused command changed rows: {changed}"))
        if outcome.exit_code == 0 and command.writes_pages:
            found += self.world.page_violations(self.pages_seen)
        found += [Violation("secret", command_line(argv), f"{s} in {p}")
                  for p, ss in scan_tree_for_secrets(folder).items() for s in ss]
        self.record(case.command, outcome.seconds, found, commands=True)
        if own_peak_mb() > peak + 200:
            self.tally.memory_jumps.append(f"{peak:.0f} -> {own_peak_mb():.0f} MB: {command_line(argv)[:300]}")
        if not found:  # the files of a case that broke something stay, for its command line to reproduce it
            shutil.rmtree(folder, ignore_errors=True)
        return found

    def run_reader(self, name: str, value: Any) -> list[Violation]:
        import shutil

        folder = self._folder()
        started = time.perf_counter()
        found = check_reader(self.readers[name], value, folder)
        self.record(name, time.perf_counter() - started, found, commands=False)
        if not found:
            shutil.rmtree(folder, ignore_errors=True)
        return found

    def record(self, name: str, seconds: float, found: list[Violation], *, commands: bool) -> None:
        tally = self.tally
        tally.inputs += 1
        (tally.commands if commands else tally.readers).add(name)
        tally.violations += found
        if seconds > tally.max_seconds:
            tally.max_seconds, tally.slowest = seconds, name
