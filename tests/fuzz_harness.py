"""Hostile and careless input for every place untrusted text enters t2c, shared by the fuzz tests
(``tests/test_fuzz*.py``) and ``bench/fuzz.py``: the corpus, a tiny monitor and a populated world to
fuzz, a runner that invokes each CLI command in this process within a time bound (or as a real
process, for what may keep one from exiting), and the checks of what must hold for any input.

The properties (each ``Violation`` names the one it breaks):

* ``outcome``: exit 0, or a refusal: exit 2 (a usage or configuration error) or 1 (an OS error) whose
  output starts with a line naming the problem (``error: ...``, or click's usage message); never a
  traceback; a refusal prints at most 20 kB.
* ``markup``: a rich ``MarkupError`` anywhere (text from outside read as markup).
* ``hang`` and ``memory``: no input runs past its time bound or grows the process past 2 GB.
* ``database``: a refused command (non-zero exit) changes no row of any table (audits recorded as
  failed, which the product keeps on purpose, excepted).
* ``html``: every HTML page holds untrusted text only as text: no element, attribute or script that
  injected markup made (the ``t2cinj`` markers tell injected markup from our own).
* ``terminal``: untrusted text is printed as written: rich markup (``[bold]t2cmk1[/bold]``) and emoji
  codes (``grass:+1``) literally, and no raw ESC, CR or other control character, and no forged line
  (``t2cfrg``) at the start of an output line.
* ``secret``: no planted credential (``t2csecret``) is printed or written anywhere.
"""

from __future__ import annotations

import contextlib
import html.parser
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

HOSTILE_DIR = Path(__file__).resolve().with_name("hostile")
REPO = HOSTILE_DIR.parents[1]
STRINGS: dict[str, list[str]] = {k: v for k, v in json.loads((HOSTILE_DIR / "strings.json").read_text()).items()
                                 if not k.startswith("_")}
ALL_STRINGS: list[str] = [s for group in STRINGS.values() for s in group]
HTML_MARKER, RICH_MARKER, FORGED_MARKER, SECRET_MARKER = "t2cinj", "t2cmk", "t2cfrg", "t2csecret"
REFUSAL_MAX_BYTES = 20_000
MAX_RSS_MB = 2048

# ------------------------------------------------------------------------------------------------
# the corpus: files that hypothesis will not write by itself


def deep_nesting(levels: int = 100_000, *, kind: str = "yaml") -> str:
    """A document nested ``levels`` deep: ``[[[...]]]`` (JSON is YAML too) or ``{"a": {"a": ...}}``."""
    if kind == "json-object":
        return '{"a": ' * levels + "1" + "}" * levels
    return "[" * levels + "]" * levels


def encodings_of(text: str) -> dict[str, bytes]:
    """``text`` in the encodings a careless user saves, and bytes that are no text at all."""
    import random

    rng = random.Random(28)
    return {
        "utf16-bom": text.encode("utf-16"),
        "utf16-le": text.encode("utf-16-le"),
        "utf8-bom": b"\xef\xbb\xbf" + text.encode(),
        "latin1": (text + "\ncaf\xe9\n").encode("latin-1", "replace"),
        "invalid-utf8": text.encode()[: len(text) // 2] + b"\xff\xfe\xc3\x28\xa0\xa1" + text.encode()[len(text) // 2:],
        "binary": bytes(rng.randrange(256) for _ in range(4096)),
        "nul-bytes": text.encode().replace(b"\n", b"\x00\n", 3),
        "png-bytes": b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(512)),
        "empty": b"",
    }


def write_huge_file(path: Path, size: int = 50 * 2**20, head: bytes = b"monitors:\n") -> Path:
    """A sparse file of ``size`` bytes that starts with ``head`` (costs no disk)."""
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return path


def hostile_file_variants(folder: Path, stem: str, suffix: str, valid_text: str) -> dict[str, Path]:
    """A valid file of one format written every hostile way: other encodings, binary, huge, nested
    100,000 deep, and the YAML bombs of ``tests/hostile`` (for YAML formats)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in encodings_of(valid_text).items():
        out[name] = folder / f"{stem}-{name}{suffix}"
        out[name].write_bytes(data)
    out["huge"] = write_huge_file(folder / f"{stem}-huge{suffix}", head=valid_text.encode()[:200])
    out["deep"] = folder / f"{stem}-deep{suffix}"
    out["deep"].write_text(deep_nesting(kind="json-object" if suffix in (".jsonl", ".json") else "yaml"))
    if suffix in (".yaml", ".yml"):
        for bomb in sorted(HOSTILE_DIR.glob("*.yaml")):
            out[bomb.stem] = bomb
    return out


def make_special_files(folder: Path) -> dict[str, Path]:
    """Things in a folder that are not regular files: a FIFO, a unix socket, a link to a device, links
    that lead nowhere or to themselves, and (useless when root) a file nobody may read."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"fifo": folder / "fifo.png", "socket": folder / "socket.png", "device": folder / "zero.png",
           "dangling": folder / "dangling.png", "loop": folder / "loop.png", "unreadable": folder / "secret.png"}
    os.mkfifo(out["fifo"])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(out["socket"]))  # the file stays after close
    sock.close()
    out["device"].symlink_to("/dev/zero")
    out["dangling"].symlink_to(folder / "no-such-file.png")
    out["loop"].symlink_to(out["loop"])
    out["unreadable"].write_bytes(b"\x89PNG\r\n\x1a\n")
    out["unreadable"].chmod(0)
    return out


def credential_urls(server_url: str) -> list[tuple[str, str, str]]:
    """(where, URL, secret): a distinct credential in every place a database URL can hold one, on the
    real server (so the command gets far) and on one that is not there (so it fails)."""
    from sqlalchemy.engine import make_url

    url = make_url(server_url).set(drivername="postgresql")
    secret = iter(f"{SECRET_MARKER}{i:02d}x" for i in range(100))
    cases = []
    for where in ("password", "sslpassword", "apikey", "token", "access_token", "sslkey", "passfile"):
        s = next(secret)
        value = f"/tmp/{s}.key" if where in ("sslkey", "passfile") else s
        cases.append((f"query {where}", url.update_query_dict({where: value}).render_as_string(False), s))
    s = next(secret)
    cases.append(("user info password", url.set(password=s).render_as_string(False), s))
    s, t = next(secret), next(secret)
    cases.append(("unreachable host", f"postgresql://fuzz:{s}@127.0.0.1:9/db?password={s}&sslpassword={t}", s))
    s = next(secret)
    cases.append(("unparseable", f"postgresql://fuzz:{s}@[::1/db?password={s}", s))
    s = next(secret)
    cases.append(("other backend", f"mysql://fuzz:{s}@localhost/db?password={s}", s))
    s = next(secret)
    cases.append(("libpq DSN", f"host=localhost dbname=db password={s}", s))
    s = next(secret)
    cases.append(("percent-encoded", url.update_query_dict({"password": f"%{s}%40"}).render_as_string(False), s))
    return cases


# ------------------------------------------------------------------------------------------------
# a tiny but real monitor (the layout of tests/conftest.py's tiny_monitor_dir)

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
TINY_BANK = "name: tiny\nversion: 1\ntemplates: plain\nconcepts:\n  - red\n  - green\n  - blue\n" \
            "  - at night | a dark picture\n  - a bright picture\n"
HOSTILE_CONCEPTS = ("</script><t2cinj2>", "<img src=x onerror=t2cinj3()>", "<script>t2cinj6()</script>",
                    "' onmouseover='t2cinj5", "[bold]t2cmk1[/bold]", "[/]", "grass", "[x](javascript:t2cinj11)",
                    "<!channel> <http://evil.example|click>", "{{ 7*7 }} {% raw %}")


def write_png(path: Path, color: tuple[int, int, int], size: int = 32, seed: int = 0) -> Path:
    """A real PNG: a coloured square on noise, so every file has different bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = color
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_images(folder: Path, n: int, seed: int = 0, *, dark: bool = False,
                 names: list[str] | None = None) -> list[Path]:
    import numpy as np

    rng = np.random.default_rng(seed)
    top = 25 if dark else 256
    names = names or [f"img-{i:04d}.png" for i in range(n)]
    return [write_png(folder / names[i % len(names)].replace("NNNN", f"{i:04d}"),
                      tuple(int(c) for c in rng.integers(0, top, 3)), seed=seed * 100_000 + i) for i in range(n)]


def build_tiny_models(root: Path) -> Path:
    """Encoder, CLIP, aligner and bank of a monitor named ``tiny`` saved under ``root`` the way users save
    theirs, with ``monitors.yaml`` (about ten seconds on two cores). Returns ``root``."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from t2c_monitor.aligner import fit_on_images
    from t2c_monitor.encoders import create_clip_model, create_source_encoder

    root.mkdir(parents=True, exist_ok=True)
    config = root / "t2c_fuzz_tiny_clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    encoder = create_source_encoder("timm:test_vit", device="cpu")
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, str(root / "encoder.safetensors"))
    torch.save(create_clip_model(f"open_clip:{config}", device="cpu").model.state_dict(), root / "clip.pt")
    encoder = create_source_encoder(f"timm:test_vit@{root / 'encoder.safetensors'}", device="cpu")
    clip = create_clip_model(f"open_clip:{config}@{root / 'clip.pt'}", device="cpu")
    images = [Image.open(p).convert("RGB") for p in write_images(root / "train", 96, seed=1)]
    fit_on_images(encoder, clip, images, ridge=1e-3).save(root / "aligner")
    (root / "bank.yaml").write_text(TINY_BANK)
    (root / "monitors.yaml").write_text(
        "monitors:\n  - name: tiny\n    encoder: timm:test_vit@encoder.safetensors\n"
        f"    clip: open_clip:{config}@clip.pt\n    aligner: aligner\n    bank: bank.yaml\n")
    return root


def monitor_document(models: Path, **sections: Any) -> dict[str, Any]:
    """The monitors document of the tiny models in ``models`` with absolute paths, ``sections`` merged in
    (a top-level ``channels`` too)."""
    import yaml

    document = yaml.safe_load((models / "monitors.yaml").read_text())
    monitor = document["monitors"][0]
    for key in ("aligner", "bank"):
        monitor[key] = str(models / monitor[key])
    monitor["encoder"] = monitor["encoder"].replace("@encoder.safetensors", f"@{models / 'encoder.safetensors'}")
    monitor["clip"] = monitor["clip"].replace("@clip.pt", f"@{models / 'clip.pt'}")
    channels = sections.pop("channels", None)
    monitor.update(sections)
    if channels:
        document["channels"] = channels
    return document


# ------------------------------------------------------------------------------------------------
# running a command: in this process within a time bound, or as a real process


@dataclass
class Outcome:
    argv: list[str]
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    error: str | None = None  # the traceback of an exception the command let out
    hung: bool = False
    rss_mb: float = 0.0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Hang(BaseException):
    """Raised in a command that ran past its time bound (a BaseException, so no ``except Exception`` in
    the product swallows it)."""


@contextlib.contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Raise ``Hang`` in the main thread after ``seconds`` (a no-op bound off the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"past {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def peak_rss_mb() -> float:
    import resource

    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def invoke(argv: list[str], *, timeout: float = 30.0, env: dict[str, str | None] | None = None) -> Outcome:
    """``t2c ARGV`` in this process through typer's CliRunner, which catches what the command lets out:
    an exception other than ``SystemExit`` is kept as ``error`` (a traceback the user would see)."""
    from typer.testing import CliRunner

    from t2c_monitor.cli import app
    from t2c_monitor.settings import reset_settings_cache

    wide_console()
    if env:
        reset_settings_cache()
    peak_before = own_peak_mb()
    started = time.perf_counter()
    try:
        with time_bound(timeout):
            result = CliRunner().invoke(app, argv, env=env)
    except Hang:
        return Outcome(argv, None, seconds=time.perf_counter() - started, hung=True, rss_mb=_grown(peak_before))
    finally:
        if env:
            reset_settings_cache()
    seconds = time.perf_counter() - started
    error = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        error = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else repr(result.exception)
    return Outcome(argv, result.exit_code, result.stdout, result.stderr, seconds, error, rss_mb=_grown(peak_before))


def own_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _grown(before: float) -> float:
    """This process's peak memory if the last command raised it, else 0 (an earlier peak is not its own)."""
    after = own_peak_mb()
    return after if after > before else 0.0


def wide_console() -> None:
    """Print the CLI's tables wide, so a check finds untrusted text on one line."""
    from t2c_monitor.cli.common import console

    console.width = 1000


def run_t2c(argv: list[str], *, env: dict[str, str], timeout: float = 120.0, cwd: Path | None = None,
            max_rss_mb: float = MAX_RSS_MB) -> Outcome:
    """``t2c ARGV`` as a real process: killed (with everything it started) past ``timeout`` seconds or
    ``max_rss_mb`` of memory, which ``hung`` and ``rss_mb`` then say."""
    import tempfile

    import psutil

    executable = Path(sys.executable).with_name("t2c")
    with tempfile.TemporaryFile("w+b") as out, tempfile.TemporaryFile("w+b") as err:
        started = time.perf_counter()
        process = subprocess.Popen([str(executable), *argv], env={**os.environ, **env}, stdout=out, stderr=err,
                                   stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
        peak, hung = 0.0, False
        while process.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, psutil.Process(process.pid).memory_info().rss / 2**20)
            if time.perf_counter() - started > timeout or peak > max_rss_mb:
                hung = time.perf_counter() - started > timeout
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = (f.read().decode(errors="replace") for f in (out, err))
    code = None if hung or peak > max_rss_mb else process.returncode
    return Outcome(argv, code, stdout, stderr, seconds, hung=hung, rss_mb=peak)


# ------------------------------------------------------------------------------------------------
# the checks


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
        found.append(Violation("outcome", where, f"exit code {o.exit_code}: {_last_line(o.output)}"))
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
    return (named[-1] if named else _last_line(traceback_text))[:300]


def _last_line(text: str) -> str:
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


# ------------------------------------------------------------------------------------------------
# the world fuzzed: a database holding the tiny monitor under hostile names, with batches, a
# baseline, an audit (its report, evidently page and alerts) and a dataset report

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
                                                 + _last_line(outcome.error or outcome.output)))
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


# ------------------------------------------------------------------------------------------------
# hypothesis strategies: hostile values of every argument kind and of every file format

from hypothesis import strategies as st  # noqa: E402 - the corpus above needs no hypothesis

IN_PROCESS_STRINGS = [s for s in ALL_STRINGS if not s.startswith(("/dev/", "/proc/"))]  # devices: a subprocess
CORPUS = st.sampled_from(IN_PROCESS_STRINGS)


def hostile_text(max_size: int = 20) -> st.SearchStrategy[str]:
    """Corpus strings, random text, the two joined, and long runs (a name past every length bound)."""
    long = st.sampled_from(["x", "[/]", "é", "<", "\u202e", "\x1b"]).flatmap(
        lambda s: st.sampled_from([s * 64, s * 501, s * 5000]))
    return st.one_of(CORPUS, st.text(max_size=max_size), st.tuples(CORPUS, st.text(max_size=6), CORPUS).map("".join),
                     long)


def known_or_hostile(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(known), hostile_text()) if known else hostile_text()


NUMBERS = st.one_of(st.sampled_from(STRINGS["numbers"]), st.integers(-(2**70), 2**70).map(str),
                    st.floats().map(repr), hostile_text(8))
DURATIONS = st.one_of(st.sampled_from(STRINGS["durations"]), hostile_text(8))
CRONS = st.one_of(st.sampled_from(STRINGS["crons"]), hostile_text(12))
TIMES = st.one_of(st.sampled_from(["2026-01-01", "2026-01-01T00:00:00+25:00", "9999-12-31T23:59:59", "0001-01-01",
                                   "2026-13-01", "now", "1e9", "-1"]), hostile_text(8))
YAML_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text(), DURATIONS),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(hostile_text(8), inner, max_size=3)), max_leaves=6)


@dataclass(frozen=True)
class FileArg:
    """A file a command reads, written just before it runs: ``data`` under a name ending ``suffix``."""

    suffix: str
    data: bytes

    def __repr__(self) -> str:
        return f"FileArg({self.suffix!r}, {self.data[:80]!r}{'...' if len(self.data) > 80 else ''}, {len(self.data)} B)"


def materialise(argv: list[str | FileArg], folder: Path) -> list[str]:
    """``argv`` with each ``FileArg`` written under ``folder`` and replaced by its path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, arg in enumerate(argv):
        if isinstance(arg, FileArg):
            path = folder / f"input-{i}{arg.suffix}"
            path.write_bytes(arg.data)
            arg = str(path)
        out.append(arg.replace("\x00", ""))  # a real command line cannot hold a NUL byte
    return out


def alias_bomb(levels: int, fan: int, leaf: str = "lol") -> str:
    """YAML whose last anchor expands to ``fan ** levels`` strings."""
    lines = [f"l0: &l0 [{', '.join([json.dumps(leaf)] * fan)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _yaml(document: Any) -> bytes:
    import yaml

    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode()


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    import copy

    out = copy.deepcopy(document)
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else {}
    node[path[-1]] = value
    return out


def careless_variants(valid: bytes, suffix: str) -> st.SearchStrategy[FileArg]:
    """A valid file saved every careless or hostile way: other encodings, binary, an alias bomb of up to
    9**6 nodes, and nesting up to 20,000 deep (deeper and larger ones run as real processes)."""
    encoded = st.sampled_from(sorted(encodings_of(valid.decode()).items())).map(lambda kv: FileArg(suffix, kv[1]))
    bombs = st.tuples(st.integers(2, 6), st.integers(2, 9)).map(
        lambda lf: FileArg(suffix, (alias_bomb(*lf) + valid.decode().replace("description: ''", "description: *l"
                                                                              + str(lf[0] - 1))).encode()))
    nested = st.sampled_from([50, 500, 5000, 20_000]).map(lambda n: FileArg(suffix, deep_nesting(n).encode()))
    raw = st.one_of(st.binary(max_size=200), hostile_text(200).map(lambda t: t.encode("utf-8", "surrogatepass")))
    return st.one_of(encoded, bombs, nested, raw.map(lambda b: FileArg(suffix, b)))


MONITOR_KEYS = [("name",), ("description",), ("encoder",), ("clip",), ("aligner",), ("bank",), ("cbm",), ("colour",),
                ("ingest", "batch_size"), ("ingest", "decode_timeout_s"), ("ingest", "allowed_roots"),
                ("ingest", "workers"), ("audit", "alpha"), ("audit", "window"), ("audit", "correction"),
                ("alerts", "channels"), ("alerts", "quiet_period"), ("alerts", "report_url"),
                ("schedules", "audit_cron"), ("schedules", "timezone"), ("retention", "vectors"),
                ("retention", "cron"), ("decode", "guided"), ("decode", "words"), ("decode", "lm"), ("ingest", "x")]


def monitor_files(world: FuzzWorld) -> st.SearchStrategy[FileArg]:
    """Monitor files: the fuzz world's ``fuzzed`` monitor with one key set to a hostile value (a cron, a
    duration, an inbox interval), hostile channels, or the whole file saved carelessly."""
    base = world.fuzz_document()
    one_key = st.tuples(st.sampled_from(MONITOR_KEYS), YAML_VALUES).map(
        lambda kv: _set(base, ("monitors", 0, *kv[0]), kv[1]))  # type: ignore[arg-type]
    schedule = st.tuples(CRONS, DURATIONS, known_or_hostile([str(world.root / "images" / "ref-1")])).map(
        lambda cdi: _set(base, ("monitors", 0, "schedules"), {"audit_cron": cdi[0], "ingest_interval": cdi[1],
                                                               "inbox": cdi[2]}))
    channels = st.tuples(hostile_text(), st.sampled_from(["webhook", "file", "email", "prefect_block", "x"]),
                         YAML_VALUES).map(lambda t: {**base, "channels": {t[0]: {"type": t[1], "url": t[2],
                                                                                    "path": t[2]}}})
    documents = st.one_of(one_key, one_key, schedule, channels).map(lambda d: FileArg(".yaml", _yaml(d)))
    return st.one_of(documents, documents, careless_variants(_yaml(base), ".yaml"))


def bank_files() -> st.SearchStrategy[FileArg]:
    """Concept banks: YAML with hostile names, versions, templates, classes and phrasings, plain text lines,
    and careless saves."""
    concept = st.one_of(hostile_text(), st.builds(lambda n, p: {"name": n, "phrasings": p}, hostile_text(),
                                                   st.lists(hostile_text(), max_size=3)), YAML_VALUES)
    document = st.fixed_dictionaries({"name": known_or_hostile(["fuzzbank"]),
                                      "concepts": st.lists(concept, max_size=5)},
                                     optional={"version": st.one_of(NUMBERS, YAML_VALUES), "templates": YAML_VALUES,
                                               "classes": YAML_VALUES, "x": YAML_VALUES})
    lines = st.lists(hostile_text(), max_size=6).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))
    return st.one_of(document.map(lambda d: FileArg(".yaml", _yaml(d))), lines.map(lambda b: FileArg(".txt", b)),
                     careless_variants(TINY_BANK.encode(), ".yaml"), careless_variants(b"red\ngreen\n", ".txt"))


def manifest_files(world: FuzzWorld) -> st.SearchStrategy[FileArg]:
    """Manifests, JSONL and CSV: every column hostile (the URI too: missing files, other folders, remote
    URIs), capture times that are not times, rows that are not objects, and careless saves."""
    import csv
    import io

    images = sorted(str(p) for p in (world.root / "images" / "ref-1").glob("*.png"))[:4]
    uri = known_or_hostile(images + ["s3://t2c-fuzz-no-bucket/a.png", "memory://x/y.png", "http://127.0.0.1:9/a.png"])
    row = st.tuples(st.sampled_from(["uri", "path", "file"]), uri, st.dictionaries(
        st.sampled_from(["captured_at", "capture_time", "label", "path"]), st.one_of(TIMES, uri, YAML_VALUES),
        max_size=2), st.dictionaries(hostile_text(12), YAML_VALUES, max_size=2)).map(
        lambda t: {t[0]: t[1], **t[2], **t[3]})
    rows = st.lists(row, min_size=1, max_size=4)

    def jsonl(rs: list[dict[str, Any]]) -> FileArg:
        return FileArg(".jsonl", "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rs)
                       .encode("utf-8", "surrogatepass"))

    def as_csv(rs: list[dict[str, Any]]) -> FileArg:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=sorted({k for r in rs for k in r}))
        writer.writeheader()
        writer.writerows([{k: "" if v is None else str(v) for k, v in r.items()} for r in rs])
        return FileArg(".csv", out.getvalue().encode("utf-8", "surrogatepass"))

    raw_lines = st.lists(st.one_of(hostile_text(), YAML_VALUES.map(json.dumps)), min_size=1, max_size=4).map(
        lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))
    return st.one_of(rows.map(jsonl), rows.map(as_csv), st.tuples(st.sampled_from([".jsonl", ".csv"]), raw_lines)
                     .map(lambda t: FileArg(*t)), careless_variants(b'{"uri": "a.png"}\n', ".jsonl"),
                     careless_variants(b"uri,label\na.png,cat\n", ".csv"))


def _array_file(kind: str, arrays: dict[str, Any], metadata: dict[str, str] | None) -> bytes:
    import io

    import numpy as np

    if kind == ".safetensors":
        from safetensors.numpy import save

        return save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=metadata)
    buffer = io.BytesIO()
    if kind == ".npy":
        np.save(buffer, next(iter(arrays.values())), allow_pickle=True)
    else:
        np.savez(buffer, **arrays)
    return buffer.getvalue()


def feature_files(d_in: int = 192, d_out: int = 32, *, key: str = "X") -> st.SearchStrategy[FileArg]:
    """Paired feature (or vector) files: wrong shapes and widths, no rows, NaN and inf, other dtypes, an
    object array (a pickle), hostile identity metadata, cut short, or not an array file at all."""
    import numpy as np

    def build(kind, n, width, fill, dtype, metadata, cut):
        data = np.full((n, width), fill, dtype=dtype) if dtype != "object" else np.array([[print]], dtype=object)
        arrays = {key: data, "Y": np.ones((max(n - (width % 2), 0), d_out), dtype="float32")}
        if key != "X":
            arrays = {key: data}
        if kind == ".safetensors" and dtype == "object":
            kind = ".npz"
        blob = _array_file(kind, arrays, metadata if kind == ".safetensors" else None)
        return FileArg(kind, blob[: len(blob) // 2] if cut else blob)

    return st.builds(build, st.sampled_from([".safetensors", ".npz", ".npy"]), st.sampled_from([0, 1, 3, 40]),
                     st.sampled_from([0, 1, d_out, d_in, d_in + 1]), st.sampled_from([0.0, 1.0, float("nan"),
                                                                                      float("inf"), 1e38]),
                     st.sampled_from(["float32", "float16", "int8", "bool", "float64", "object"]),
                     st.one_of(st.none(), st.dictionaries(st.sampled_from(["source", "clip", "t2c", "x"]),
                                                          hostile_text(), max_size=2)), st.booleans()) \
        | st.binary(max_size=300).map(lambda b: FileArg(".safetensors", b))


def text_files(suffix: str = ".txt") -> st.SearchStrategy[FileArg]:
    """Class lists and caption corpora: hostile lines, and careless saves."""
    lines = st.lists(hostile_text(), max_size=6).map(lambda ls: FileArg(suffix, "\n".join(ls).encode(
        "utf-8", "surrogatepass")))
    return st.one_of(lines, careless_variants(b"cat\ndog\n", suffix))


# ------------------------------------------------------------------------------------------------
# every leaf command of the CLI, with a strategy of its arguments


def leaf_commands() -> list[str]:
    """Every command ``t2c`` runs (a group that runs itself, such as ``t2c audit``, counts as one)."""
    import typer.main

    from t2c_monitor.cli import app

    def walk(command: Any, words: list[str]) -> list[str]:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            return [" ".join(words)]
        own = [" ".join(words)] if words and getattr(command, "invoke_without_command", False) else []
        return own + [name for key, sub in subcommands.items() for name in walk(sub, [*words, key])]

    return walk(typer.main.get_command(app), [])


@dataclass(frozen=True)
class Command:
    name: str
    args: st.SearchStrategy[list[Any]]
    tier: str  # parse: refused or answered before any work; read: reads the database; model: loads models
    result_exit: int | None = None  # a non-zero exit that reports a result rather than a refusal
    writes_pages: bool = False


@dataclass(frozen=True)
class Case:
    command: str
    args: tuple[Any, ...]
    env: tuple[tuple[str, str], ...] = ()


def _opt(flag: str, values: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[list[str]]:
    return st.one_of(st.just([]), st.just([flag]) if values is None else values.map(lambda v: [flag, v]))


def _req(flag: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return values.map(lambda v: [flag, v])


def _pos(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return values.map(lambda v: [v])


def _args(*parts: st.SearchStrategy[list[Any]]) -> st.SearchStrategy[list[Any]]:
    return st.tuples(*parts).map(lambda ps: [a for p in ps for a in p])


REFUSED = st.one_of(st.just(["--t2c-bogus"]), hostile_text(8).map(lambda t: ["--t2c-" + t]), st.just(["--help"]))
JSON = _opt("--json")


def _safe_name(text: str) -> str:
    name = text.replace("/", "_").replace("\x00", "").replace("..", "_").lstrip("-") or "empty"
    return name[:300]


@dataclass(frozen=True)
class Values:
    """The argument kinds, known values of the fuzz world mixed with hostile ones."""

    monitor: st.SearchStrategy[str]
    batch: st.SearchStrategy[str]
    batches: st.SearchStrategy[str]
    concept: st.SearchStrategy[str]
    audit: st.SearchStrategy[str]
    out: st.SearchStrategy[str]
    path: st.SearchStrategy[str]
    images: st.SearchStrategy[Any]
    encoder: st.SearchStrategy[str]
    clip: st.SearchStrategy[str]
    device: st.SearchStrategy[str]

    @classmethod
    def of(cls, world: FuzzWorld) -> Values:
        import yaml

        monitor = yaml.safe_load(world.monitor_file.read_text())["monitors"][0]
        images = world.root / "images"
        batch = known_or_hostile(["ref-1", "ref-2", HOSTILE_BATCH, MANIFEST_BATCH])
        out = st.one_of(hostile_text(12).map(lambda t: str(world.work / "out" / _safe_name(t))),
                        st.sampled_from(["/dev/null", "/dev/full", "/proc/self/t2c-fuzz", str(world.work / "a\nb")]))
        path = known_or_hostile(["/etc/passwd", "/proc/self/status", "/nonexistent/x", "-", str(images / "ref-1"),
                                 str(images / "day"), str(world.monitor_file)])
        return cls(monitor=known_or_hostile(["tiny", "tiny", "fuzzed"]), batch=batch,
                   batches=st.lists(batch, max_size=3).map(",".join),
                   concept=known_or_hostile(["red", "grass", "at night", *HOSTILE_CONCEPTS]),
                   audit=known_or_hostile([str(i) for i in world.audit_ids] + ["0", "-1", "99999999999"]),
                   out=out, path=path, images=st.one_of(path, manifest_files(world), st.just(str(images / "labelled"))),
                   encoder=known_or_hostile([monitor["encoder"], "timm:t2c-no-such", "timm:test_vit@/etc/passwd"]),
                   clip=known_or_hostile([monitor["clip"], "open_clip:/etc/passwd", "open_clip:t2c-no-such"]),
                   device=known_or_hostile(["cpu", "cuda", "meta", "cpu:99", "auto"]))


def command_table(world: FuzzWorld) -> dict[str, Command]:
    """A ``Command`` for every leaf command: what it is given, and how expensive it is. Commands that
    would start servers, train for minutes or replace this process (``demo``, ``serve``, ``world build``,
    ``server up``/``url``, ``db revision``, ``ui --start``) get only arguments they must refuse."""
    v = Values.of(world)
    table = [*_table_db(world, v), *_table_models(world, v), *_table_monitoring(world, v), *_table_reports(world, v)]
    return {c.name: c for c in table}


def _table_db(world: FuzzWorld, v: Values) -> list[Command]:
    revision = hostile_text(12).map(lambda t: "zz" + t)  # never a real revision: a fuzzer must not downgrade
    return [
        Command("demo", _args(_opt("--quick"), REFUSED), "parse"),
        Command("serve", _args(_opt("-m", v.monitor), REFUSED), "parse"),
        Command("world build", st.one_of(st.just(["--seed", "-1"]), st.just(["--threads", "0"]), REFUSED), "parse"),
        Command("server up", REFUSED, "parse"),
        Command("server url", REFUSED, "parse"),
        Command("db revision", st.one_of(st.just([]), _args(REFUSED, _req("-m", hostile_text()))), "parse"),
        Command("ui", _args(_opt("--port", NUMBERS)), "parse"),
        Command("server status", JSON, "parse", result_exit=1),
        Command("server stop", st.just([]), "parse"),
        Command("db upgrade", _opt("--revision", st.one_of(st.just("head"), revision)), "read"),
        Command("db downgrade", _pos(revision), "read"),
        Command("db status", JSON, "read"),
        Command("db stop", st.just([]), "read"),
        Command("db url", st.just([]), "read"),
        Command("db up", JSON, "read"),
        Command("monitor list", JSON, "read"),
        Command("monitor apply", _args(_pos(st.one_of(monitor_files(world), v.path)),
                                       st.sampled_from([["--check"], ["--check"], []]), JSON), "model"),
        Command("deployments list", _args(st.one_of(st.just([]), _pos(st.one_of(monitor_files(world), v.path))), JSON),
                "read"),
        Command("deployments prefect-yaml", _args(_pos(st.one_of(monitor_files(world), v.path)), _opt("--out", v.out),
                                                  _opt("--work-pool", hostile_text())), "parse"),
    ]


def _table_models(world: FuzzWorld, v: Values) -> list[Command]:
    images = world.root / "images"
    aligner = st.one_of(st.just(str(world.models / "aligner")), v.path)
    features = st.one_of(feature_files(), v.path)
    templates = known_or_hostile(["paper", "plain", "{} at dusk", "{}{}", "{0}", "{x}"])
    return [
        Command("concepts encode", _args(_pos(st.one_of(bank_files(), v.path)), _req("--clip", v.clip),
                                         _req("--out", v.out), _opt("--template", templates),
                                         _opt("--classes", hostile_text()), _opt("--classes-file", text_files()),
                                         _opt("--name", hostile_text()), _opt("--version", NUMBERS),
                                         _opt("--batch-size", NUMBERS), JSON), "model"),
        Command("aligner fit", _args(_req("--out", v.out), st.one_of(
            _req("--features", features), _args(_req("--images", v.path), _req("--encoder", v.encoder),
                                                _req("--clip", v.clip))),
            _opt("--method", known_or_hostile(["exact", "sgd"])),
            _opt("--ridge", known_or_hostile(["auto", "0", "1e-3"])),
            _opt("--holdout", NUMBERS), _opt("--chunk-rows", NUMBERS),
            _opt("--precision", known_or_hostile(["mixed"])), _opt("--device", v.device), JSON), "model"),
        Command("aligner eval", _args(_pos(aligner), _req("--features", features), _opt("--chunk-rows", NUMBERS),
                                      _opt("--source-accuracy", NUMBERS), JSON), "model"),
        Command("zeroshot", _args(_pos(st.one_of(st.just(str(images / "labelled")), v.path)),
                                  _req("--encoder", v.encoder), _req("--aligner", aligner), _req("--clip", v.clip),
                                  _opt("--template", templates), _opt("--batch-size", NUMBERS), JSON), "model"),
        Command("decoder train", _args(_req("--clip", v.clip), _req("--lm", known_or_hostile([str(world.work)])),
                                       _req("--corpus", st.one_of(text_files(), v.path)), _req("--out", v.out),
                                       _opt("--steps", NUMBERS), _opt("--noise-norm", NUMBERS)), "model"),
        Command("world images", _args(_pos(v.out), _req("--n", st.sampled_from(["0", "1", "2", "-1", "x", "", "1.5"])),
                                      _opt("--seed", NUMBERS), _opt("--format", known_or_hostile(["png", "jpeg"])),
                                      _opt("--shift", known_or_hostile(["night=0.5", "color=purple:0.4"])), JSON),
                "model"),
        Command("cbm fit", _args(_pos(v.images), _req("-m", v.monitor), _req("--out", v.out),
                                 _opt("--label-key", known_or_hostile(["label"])), _opt("--test-fraction", NUMBERS),
                                 _opt("--device", v.device)), "model"),
        Command("cbm eval", _args(_pos(v.images), _req("-m", v.monitor),
                                  _opt("--model", known_or_hostile([str(world.work / "cbm")])),
                                  _opt("--label-key", hostile_text()), JSON), "model"),
        Command("cbm explain", _args(_pos(v.images), _req("-m", v.monitor),
                                     _opt("--model", known_or_hostile([str(world.work / "cbm")])),
                                     _opt("--top", NUMBERS), _opt("--misclassified"), JSON), "model"),
        Command("decode", _args(_req("-m", v.monitor), st.one_of(
            _req("--audit", v.audit), _req("--vectors", st.one_of(feature_files(key="vectors"), v.path)),
            _req("--images", v.images), st.just(["--class-head"]), st.just([])),
            _opt("--decoder", known_or_hostile(["vocab", "prefix", "guided"])),
            _opt("--mode", known_or_hostile(["sparse"])),
            _opt("--top", NUMBERS), st.just(["--bank-only"]), JSON), "model"),
        Command("concepts add", _args(st.lists(v.concept, min_size=1, max_size=2), _req("-m", v.monitor)), "model"),
        Command("concepts remove", _args(st.lists(v.concept, min_size=1, max_size=2), _req("-m", v.monitor)), "model"),
    ]


def _table_monitoring(world: FuzzWorld, v: Values) -> list[Command]:
    images = world.root / "images"
    source = st.one_of(manifest_files(world), v.path, st.sampled_from([str(images / "day"), str(images / "ref-1")]))
    constraint = st.one_of(st.tuples(v.concept, st.sampled_from(["+", "-", ""]), NUMBERS).map(
        lambda t: f"{t[0]}:{t[1]}{t[2]}"), hostile_text())
    window = st.one_of(_opt("--window", DURATIONS), _args(_opt("--since", TIMES), _opt("--until", TIMES)))
    return [
        Command("ingest", _args(_pos(source), _req("-m", v.monitor), _opt("--batch-id", v.batch),
                                st.sampled_from([["--no-flow"], ["--no-flow"], ["--workers", "0"]]), JSON), "model"),
        Command("batches list", _args(_req("-m", v.monitor), _opt("--status", known_or_hostile(["stored", "failed"])),
                                      _opt("--limit", NUMBERS), JSON), "read"),
        Command("baseline build", _args(_req("-m", v.monitor), _opt("--batches", v.batches), _opt("--last", NUMBERS),
                                        _opt("--reservoir", NUMBERS), _opt("--seed", NUMBERS), JSON), "read"),
        Command("audit", _args(_opt("-m", v.monitor), st.one_of(_opt("--last", NUMBERS), _opt("--batches", v.batches),
                                                                window), _opt("--no-alerts"), st.just(["--no-flow"]),
                               JSON), "model", writes_pages=True),
        Command("audit history", _args(_req("-m", v.monitor), _req("-c", v.concept), _opt("--limit", NUMBERS), JSON),
                "read"),
        Command("audit list", _args(_req("-m", v.monitor), _opt("--limit", NUMBERS), JSON), "read"),
        Command("search", _args(st.one_of(st.lists(constraint, min_size=1, max_size=3), _req("--text", hostile_text()),
                                          _req("--index", known_or_hostile(["show", "build", "drop", "rebuild"]))),
                                _req("-m", v.monitor), _opt("--batch", v.batch), window,
                                _opt("--where", hostile_text()), _opt("--top", NUMBERS), _opt("--raw"),
                                _opt("--html", v.out.map(lambda p: p + ".html")), JSON), "model", writes_pages=True),
        Command("concepts suggest", _args(_req("-m", v.monitor), _req("--audit", v.audit), _opt("--top", NUMBERS),
                                          _opt("--accept", st.sampled_from(["0", "-1", "x"])), JSON), "model"),
        Command("alerts list", _args(_req("-m", v.monitor), _opt("--limit", NUMBERS), JSON), "read"),
        Command("alerts retry", _args(_opt("-m", v.monitor), JSON), "read", result_exit=1),
        Command("retention apply", _args(_opt("-m", v.monitor), _opt("--older-than", DURATIONS), st.just(["--dry-run"]),
                                         _opt("--no-vacuum"), JSON), "read"),
    ]


def _table_reports(world: FuzzWorld, v: Values) -> list[Command]:
    window = st.one_of(_opt("--window", DURATIONS), _args(_opt("--since", TIMES), _opt("--until", TIMES)))
    return [
        Command("report", _args(_opt("-m", v.monitor), _opt("--audit", v.audit), JSON), "model", writes_pages=True),
        Command("report dataset", _args(_req("-m", v.monitor), st.one_of(_opt("--batches", v.batches), window), JSON),
                "read", writes_pages=True),
        Command("report digest", _args(_req("-m", v.monitor), window, st.just(["--no-refresh"]), _opt("--send"), JSON),
                "read", writes_pages=True),
    ]


# ------------------------------------------------------------------------------------------------
# the library's readers and parsers, called directly: thousands of files and queries a second


@dataclass(frozen=True)
class Reader:
    name: str
    values: st.SearchStrategy[Any]
    call: Callable[[Any], Any]
    refusals: tuple[type[BaseException], ...]  # what it may raise: a refusal with a message
    names_file: bool = True  # a refusal names the file it read


def reader_table(world: FuzzWorld) -> dict[str, Reader]:
    """Every file format t2c reads and every query language it parses, as the library reads them."""
    from t2c_monitor.alerts import redact
    from t2c_monitor.concepts import load_bank_definition
    from t2c_monitor.concepts.definition import read_class_names
    from t2c_monitor.errors import T2CError
    from t2c_monitor.features import open_feature_file
    from t2c_monitor.manifests import items_from_manifest
    from t2c_monitor.monitors import check_cron, load_monitor_file, parse_duration
    from t2c_monitor.reports.render import md
    from t2c_monitor.search.query import parse_constraints, parse_where
    from t2c_monitor.store.engine import normalise_url
    from t2c_monitor.world.shifts import parse_shift

    concept = known_or_hostile(["red", "grass", *HOSTILE_CONCEPTS])
    constraint = st.one_of(st.tuples(concept, st.sampled_from(["+", "-", ""]), NUMBERS).map(
        lambda t: f"{t[0]}:{t[1]}{t[2]}"), hostile_text())
    urls = st.one_of(st.sampled_from([u for _, u, _ in credential_urls(world.database_url)]),
                     st.tuples(hostile_text(), st.sampled_from(STRINGS["paths"])).map(
                         lambda t: f"postgresql://u:{SECRET_MARKER}77x@{t[0]}/{t[1]}?password={SECRET_MARKER}77x"))
    readers = [
        Reader("monitor file", monitor_files(world), load_monitor_file, (T2CError,)),
        Reader("bank file", bank_files(), load_bank_definition, (T2CError,)),
        Reader("manifest", manifest_files(world), items_from_manifest, (T2CError,)),
        Reader("feature file", feature_files(), lambda p: open_feature_file(p).get("X"), (T2CError,)),
        Reader("class list", text_files(), read_class_names, (T2CError,)),
        Reader("search query", st.lists(constraint, max_size=4), parse_constraints, (T2CError,), names_file=False),
        Reader("search where", st.lists(hostile_text(), max_size=3), parse_where, (T2CError,), names_file=False),
        Reader("duration", DURATIONS, parse_duration, (ValueError,), names_file=False),
        Reader("cron", CRONS, check_cron, (ValueError,), names_file=False),
        Reader("world shift", st.lists(hostile_text(), max_size=3), parse_shift, (T2CError,), names_file=False),
        Reader("database url", urls, normalise_url, (T2CError,), names_file=False),
        Reader("markdown text", hostile_text(), md, (), names_file=False),
        Reader("alert error text", st.sampled_from([u for _, u, _ in credential_urls(world.database_url)]).flatmap(
            lambda u: st.sampled_from([u, f"send failed: {u}", f"could not connect ({u}): refused"])), redact, (),
            names_file=False),
    ]
    return {r.name: r for r in readers}


def check_reader(reader: Reader, value: Any, folder: Path, *, time_bound_s: float = 10.0) -> list[Violation]:
    """P1, P2 and P6 for one call of a reader: it returns, or refuses with a short message that names the
    file; what ``md`` and ``redact`` return holds no live markup and no secret."""
    path = materialise([value], folder)[0] if isinstance(value, FileArg) else value
    where = f"{reader.name}: {value!r}"[:400]
    started, found = time.perf_counter(), []
    try:
        with time_bound(time_bound_s):
            result = reader.call(path)
        text = str(result) if reader.name in ("markdown text", "alert error text") else ""
        found += [Violation("markdown", where, p) for p in markdown_injections(text)]
        found += [Violation("secret", where, f"kept {s}") for s in secrets_in(text)]
    except Hang:
        found.append(Violation("hang", where, f"still running after {time_bound_s} s"))
    except reader.refusals as exc:
        message = str(exc)
        given = 0 if isinstance(value, FileArg) else len(repr(value))  # a message may quote what it was given
        if len(message) > REFUSAL_MAX_BYTES + given:
            found.append(Violation("outcome", where, f"a refusal of {len(message)} characters"))
        first = message.splitlines()[0] if message else ""
        if reader.names_file and str(path) not in first:
            found.append(Violation("outcome", where, f"a refusal that does not name the file: {message[:200]!r}"))
        found += [Violation("secret", where, f"printed {s}") for s in secrets_in(message)]
    except RecursionError:
        found.append(Violation("outcome", where, "traceback: RecursionError"))
    except Exception as exc:  # noqa: BLE001 - any other exception is a traceback the user would see
        kind = "markup" if "MarkupError" in type(exc).__name__ else "outcome"
        found.append(Violation(kind, where, f"traceback: {type(exc).__name__}: {str(exc)[:200]}"))
    seconds = time.perf_counter() - started
    if seconds > time_bound_s:
        found.append(Violation("hang", where, f"took {seconds:.1f} s"))
    return found


# ------------------------------------------------------------------------------------------------
# a fuzzing session over one world: runs cases, checks every property, keeps the figures


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


# ------------------------------------------------------------------------------------------------
# the corpus run through the CLI: every file format saved every hostile way, special files

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
