"""The checks: what must hold for any input, each ``Violation`` naming the property it breaks
(the properties are listed in the package docstring, ``fuzz/__init__.py``)."""

from __future__ import annotations

import contextlib
import html.parser
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .corpus import ALL_STRINGS, FORGED_MARKER, HTML_MARKER, RICH_MARKER, SECRET_MARKER
from .runner import MAX_RSS_MB, Outcome

REFUSAL_MAX_BYTES = 20_000


@dataclass(frozen=True)
class Violation:
    prop: str  # outcome, markup, hang, memory, database, html, terminal, secret
    command: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.prop}] {self.command}: {self.detail}"


def command_line(argv: list[str]) -> str:
    import shlex

    return "t2c " + " ".join(shlex.quote(a) if len(a) < 300 else shlex.quote(a[:60]) + f"...({len(a)} chars)"
                             for a in argv)


REFUSAL_STARTS = ("error:", "Usage:", "Error:", "╭─ Error")


def check_outcome(o: Outcome, *, inputs: list[str] | None = None, exits: tuple[int, ...] = (0, 1, 2),
                  time_bound_s: float = 30.0, result_exit: int | None = None) -> list[Violation]:
    """P1, P2, P5 and P6 for one command's outcome; ``inputs`` are the untrusted strings it was given;
    ``result_exit`` is a non-zero exit that reports a result (``t2c server status``: not running), not a
    refusal."""
    exits = exits if result_exit is None else (*exits, result_exit)
    where, found = command_line(o.argv), []
    if o.hung or o.seconds > time_bound_s:
        found.append(Violation("hang", where, f"still running after {o.seconds:.1f} s"))
    if o.rss_mb > MAX_RSS_MB:
        found.append(Violation("memory", where, f"{o.rss_mb:.0f} MB"))
    if o.error or "Traceback (most recent call last)" in o.output:
        kind = "markup" if "MarkupError" in (o.error or o.output) else "outcome"
        found.append(Violation(kind, where, "traceback: " + _exception_line(o.error or o.output)))
    elif o.exit_code is not None and o.exit_code not in exits:
        found.append(Violation("outcome", where, f"exit code {o.exit_code}: {last_line(o.output)}"))
    elif o.exit_code and o.exit_code != result_exit:
        lines = [line.strip() for line in o.output.splitlines() if line.strip()]
        if not any(line.startswith(REFUSAL_STARTS) for line in lines):
            found.append(Violation("outcome", where, f"exit {o.exit_code} without a line naming the problem: "
                                   f"{(lines or [''])[0][:200]!r}"))
        given = sum(len(a) for a in o.argv)  # a message may repeat an argument, escaped: only the rest is bounded
        if len(o.output) > REFUSAL_MAX_BYTES + 8 * given:
            found.append(Violation("outcome", where, f"a refusal of {len(o.output)} characters"))
    found += [Violation("terminal", where, p) for p in terminal_problems(o.output, inputs or [])]
    found += [Violation("secret", where, f"printed {s}") for s in secrets_in(o.output + (o.error or ""))]
    found += [Violation("outcome", where, f"a hint names no command: {h!r}") for h in unknown_hints(o.output)]
    return found


def unknown_hints(text: str) -> list[str]:
    """The ``t2c ...`` commands a message suggests that do not exist (``t2c search index`` for
    ``t2c search --index``)."""
    import re

    tree = _command_tree()
    found = []
    for match in re.finditer(r"`t2c((?: [a-z][a-z-]*)+)", text):
        words = match.group(1).split()
        node, known = tree, True
        for word in words:
            if set(node) == {""} and word not in node[""]:
                break  # a leaf command: the rest are its arguments
            if word not in node and word in node.get("", {}):
                known = False  # an option of the command written as a subcommand: `t2c search index`
                break
            if word not in node:
                known = bool(node[""])  # a group that runs itself takes arguments here
                break
            node = node[word]
        if not known:
            found.append("t2c " + " ".join(words))
    return found


def _command_tree() -> dict[str, Any]:
    """{word: subtree}; under ``""`` the long option names (no dashes) of a command that runs itself."""
    import typer.main

    from t2c_monitor.cli import app

    def walk(command: Any) -> dict[str, Any]:
        options = {name.lstrip("-") for p in getattr(command, "params", []) for name in getattr(p, "opts", [])
                   if name.startswith("--")}
        node = {name: walk(sub) for name, sub in getattr(command, "commands", {}).items()}
        return {**node, "": dict.fromkeys(options, {})}

    return walk(typer.main.get_command(app))


def _exception_line(traceback_text: str) -> str:
    """The ``SomeError: message`` line of a traceback (not SQLAlchemy's "Background on this error" link)."""
    import re

    lines = [line.strip(" │") for line in traceback_text.strip().splitlines()]
    named = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", line)]
    return (named[-1] if named else last_line(traceback_text))[:300]


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _emoji() -> frozenset[str]:
    from rich._emoji_codes import EMOJI

    return frozenset(ch for value in EMOJI.values() for ch in value if ord(ch) > 0x2000)


EMOJI_CHARS = _emoji()
_PROBES = [*ALL_STRINGS, "[bold]t2cmk7[/bold]", "[bold]t2cmk8[/bold]", "[bold]t2cmk9[/bold]", "[bold]t2cmk10[/bold]"]
_BRACKETED = frozenset(m for p in _PROBES for m in __import__("re").findall(rf"\]({RICH_MARKER}\d+)", p))
"""The rich markers written right after a ``[tag]``: printed as written, each still follows a ``]``."""
_BOX = {chr(c) for c in range(0x2500, 0x2580)}


def terminal_problems(text: str, inputs: list[str]) -> list[str]:
    """P5: what printed ``text`` does with untrusted ``inputs``."""
    import re

    problems = []
    raw = sorted({repr(ch) for ch in text if (ch < " " and ch not in "\n\t") or "\x7f" <= ch <= "\x9f"})
    if raw:
        problems.append(f"raw control characters {', '.join(raw)}")
    forged = [line for line in text.splitlines() if line.lstrip(" │|").startswith(FORGED_MARKER)]
    if forged:
        problems.append(f"a forged line: {forged[0][:80]!r}")
    given = "".join(inputs)
    squeezed = "".join(ch for ch in text if not ch.isspace() and ch not in _BOX)
    for found in re.finditer(rf"{RICH_MARKER}\d+", squeezed):  # each follows a [tag] where it was written
        if found.group() in _BRACKETED and found.group() in given and squeezed[found.start() - 1:found.start()] != "]":
            probe = next(p for p in _PROBES if found.group() in p)
            problems.append(f"rich markup read: {probe!r} not printed as written")
            break
    emoji = sorted(set(text) & EMOJI_CHARS - set(given))
    if emoji:
        problems.append(f"an emoji code rendered: {''.join(emoji)}")
    return problems


def secrets_in(text: str) -> list[str]:
    import re

    return sorted(set(re.findall(rf"{SECRET_MARKER}\d+x", text)))


class _InjectionFinder(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if HTML_MARKER in tag:
            self.found.append(f"element <{tag}>")
        for name, value in attrs:
            value = value or ""
            if HTML_MARKER in name:
                self.found.append(f"attribute {name!r} on <{tag}>")
            elif HTML_MARKER in value and (name.startswith("on") or value.strip().lower().startswith("javascript:")):
                self.found.append(f"<{tag} {name}={value[:60]!r}>")
        self._script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._script = False

    def handle_data(self, data: str) -> None:
        if self._script and data.lstrip().startswith(HTML_MARKER):
            self.found.append(f"a script of its own: {data[:60]!r}")


def html_injections(page: str) -> list[str]:
    """P4: the elements, attributes and scripts of ``page`` that injected markup made."""
    finder = _InjectionFinder()
    finder.feed(page)
    finder.close()
    return finder.found


def markdown_injections(text: str, *, slack_only: bool = False) -> list[str]:
    """Injected markup left live in a Markdown digest (links, raw HTML) or in text a Slack-style webhook
    renders as mrkdwn (mentions, links): ``slack_only`` for plain-text fields."""
    import re

    slack = {"a Slack mention": r"<!(?:channel|here)>", "a Slack link": r"<https?://[^|>]*\|"}
    markdown = {"a javascript: link": rf"(?<!\\)\]\(javascript:{HTML_MARKER}",
                "raw HTML": rf"(?<![\\<])<(?:script>)?{HTML_MARKER}",
                **{what: r"(?<!\\)" + pattern for what, pattern in slack.items()}}
    patterns = slack if slack_only else markdown
    return [what for what, pattern in patterns.items() if re.search(pattern, text)]


def scan_pages(root: Path, seen: dict[Path, float] | None = None) -> dict[Path, list[str]]:
    """``html_injections`` (and ``markdown_injections`` for ``.md``) of every page under ``root``
    written since ``seen`` recorded it; ``seen`` is updated."""
    seen = {} if seen is None else seen
    found = {}
    for path in sorted([*root.rglob("*.html"), *root.rglob("*.md")]):
        with contextlib.suppress(OSError):
            mtime = path.stat().st_mtime
            if seen.get(path) == mtime:
                continue
            seen[path] = mtime
            text = path.read_text(errors="replace")
            problems = markdown_injections(text) if path.suffix == ".md" else html_injections(text)
            if problems:
                found[path] = problems
    return found


def scan_tree_for_secrets(root: Path) -> dict[str, list[str]]:
    """P6 on disk: every planted credential in any file under ``root`` (database files included)."""
    import re

    pattern = re.compile(rb"t2csecret\d+x")
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 2**30:
                hits = sorted({m.decode() for m in pattern.findall(path.read_bytes())})
                if hits:
                    found[str(path)] = hits
    return found


def table_counts(engine: Any) -> dict[str, int]:
    """Rows in every table of the public schema (audits recorded as failed left out: kept by design)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        tables = conn.execute(text("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                   "'public' AND table_type = 'BASE TABLE' ORDER BY table_name")).scalars().all()
        parts = [f"SELECT '{t}', count(*) FROM \"{t}\"" + (" WHERE status <> 'failed'" if t == "audit" else "")
                 for t in tables]
        return dict(conn.execute(text(" UNION ALL ".join(parts))).all()) if parts else {}


def rows_holding_secrets(engine: Any) -> dict[str, int]:
    """P6 in the database: rows of each table whose text holds a planted credential."""
    from sqlalchemy import text

    with engine.connect() as conn:
        tables = conn.execute(text("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                   "'public' AND table_type = 'BASE TABLE'")).scalars().all()
        counts = {t: conn.execute(text(f"SELECT count(*) FROM \"{t}\" x WHERE x::text LIKE '%t2csecret%'"))
                  .scalar_one() for t in tables}
    return {t: n for t, n in counts.items() if n}
