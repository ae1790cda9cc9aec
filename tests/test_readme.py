"""The README carries a new team, so it must not lie: its CLI and monitor-file references are what the code
generates, every `t2c` command it names exists, every file of the repository it names is there, and its
picture of a report is a real screenshot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_two_commands_come_first():
    head = "\n".join(README.splitlines()[:12])
    assert "make demo" in head and "make test" in head


def test_generated_references_are_current():
    from t2c_monitor.reference import generated, replace_sections

    assert replace_sections(README, generated()) == README, \
        "the README's CLI or monitor-file reference is stale: run `make docs`"


def _commands() -> set[tuple[str, ...]]:
    import typer

    from t2c_monitor.cli import app
    from t2c_monitor.reference import _walk

    root = typer.main.get_command(app)
    return {tuple(path) for path, _ in _walk(root, root.make_context("t2c", [], resilient_parsing=True), ["t2c"])}


def _code() -> str:
    """The README's code: fenced blocks and inline code spans (prose may say "t2c never ...")."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", README, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", README, flags=re.S))
    return "\n".join(fenced + spans)


def test_every_command_the_readme_names_exists():
    commands = _commands()
    groups = {c[:2] for c in commands if len(c) > 2}
    missing = set()
    for first, second in re.findall(r"(?<![\w/.-])t2c ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", _code()):
        if ("t2c", first) in groups:
            if second and ("t2c", first, second) not in commands:
                missing.add(f"t2c {first} {second}")
        elif ("t2c", first) not in commands:
            missing.add(f"t2c {first}")
    assert not missing, f"the README names commands t2c does not have: {sorted(missing)}"


WRITTEN_BY_THE_USER = {"deploy/config/monitors.yaml"}  # the README tells them to copy the example there


def test_every_repository_file_the_readme_names_exists():
    tops = r"(?:bench|tests|flows|t2c_monitor|migrations|dashboards|deploy|docs|\.ci)"
    named = set(re.findall(rf"(?<![\w./$-])({tops}/[\w.*/-]*\w)", README)) - WRITTEN_BY_THE_USER
    missing = sorted(n for n in named if not any(ROOT.glob(n)))
    assert not missing, f"the README names files that do not exist: {missing}"


def test_the_report_picture_is_a_real_screenshot():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert pictures, "the README shows what a report looks like"
    from PIL import Image

    for picture in pictures:
        image = Image.open(ROOT / picture)
        assert image.format == "PNG" and image.width >= 800, picture
        low, high = image.convert("L").getextrema()
        assert high - low > 50, f"{picture} is blank"


@pytest.mark.parametrize("section", ["CLI reference", "Monitor file reference", "Architecture",
                                     "Benchmarks", "Deploying with docker-compose", "Dashboards", "Scale-out"])
def test_the_readme_has_the_sections_a_new_team_needs(section):
    assert re.search(rf"^## {re.escape(section)}", README, re.M), section
