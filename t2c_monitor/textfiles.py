"""Files from outside (monitor and bank files, class lists, manifests, feature files), read within bounds.

Whoever writes such a file may be careless or hostile: a FIFO or a device given as a path would block
or never end, a binary file is not text, and a few lines of YAML anchors and aliases ("billion laughs")
expand to gigabytes. Every refusal is a ``ConfigError`` of one line that names the file and the bound.
"""

from __future__ import annotations

import codecs
import errno
import os
import reprlib
import stat
from pathlib import Path
from typing import Any

import yaml

from t2c_monitor.errors import ConfigError
from t2c_monitor.redaction import redact

MAX_TEXT_BYTES = 8 << 20
"""A monitor file, concept bank or class list over this size is refused (the largest real one is kilobytes)."""
MAX_YAML_NODES = 200_000
"""Scalars, lists and mappings a YAML document may hold once its aliases are expanded."""
MAX_YAML_DEPTH = 64
"""How deeply lists and mappings may nest in a YAML document, aliases expanded."""
MAX_SHOWN = 120
"""Characters of a value from outside that an error message quotes."""

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def clip(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for quoting a value from outside in a message
    (lists and mappings are shortened before they are written out, however large they are)."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    shortener.maxlevel, shortener.maxlist, shortener.maxdict = 3, 6, 6
    shown = redact(shortener.repr(value))  # a value from outside may be a URL with a password in it
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, word in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return word
    return "special file"


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of ``path`` when it is a regular file; ``OSError`` otherwise.

    Opened without blocking (a FIFO with no writer would wait for one forever) and checked before
    a byte is read: a FIFO, device or socket raises ``NotARegularFile``, a directory ``IsADirectoryError``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        mode = _mode_or_none(path)
        if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a socket cannot be opened
            raise NotARegularFile(f"not a regular file (a {file_kind(mode)})") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"not a regular file (a {file_kind(mode)})")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _mode_or_none(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


class NotARegularFile(OSError):
    """A path that names a FIFO, device, socket or directory where a file was expected."""


def _reason(exc: OSError) -> str:
    if isinstance(exc, NotARegularFile):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "cannot be read (permission denied)"
    return f"cannot be read ({exc.strerror or type(exc).__name__})"


def read_bytes_bounded(path: str | Path, *, what: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``; ``ConfigError`` naming ``what`` when it is missing, special
    or larger than ``max_bytes``."""
    try:
        fd = open_regular(path)
    except OSError as exc:
        raise ConfigError(f"{what} {path} {_reason(exc)}: give the path of a file.") from None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(f"{what} {path} is larger than {max_bytes:,} bytes: it cannot be a {what}.")
    return data


def decode_text(data: bytes, *, where: str, allow_nul: bool = False) -> str:
    """``data`` as text: UTF-8, or UTF-8/16/32 with a byte-order mark; ``ConfigError`` for anything else,
    and for a NUL byte unless ``allow_nul`` (no text file we read has one; a binary file has many)."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{where} is not valid {codec.upper()} text (byte {exc.start}): "
                                  "save it as UTF-8.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte {exc.start} is {data[exc.start:exc.start + 1]!r}; "
                          "a binary file?): save it as UTF-8.") from None
    if not allow_nul and "\x00" in text:
        raise ConfigError(f"{where} holds a NUL byte at character {text.index(chr(0))} (a binary file?): "
                          "save it as UTF-8 text.")
    return text


def read_text(path: str | Path, *, what: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A small text file from outside, bounded and decoded (see ``read_bytes_bounded``, ``decode_text``)."""
    return decode_text(read_bytes_bounded(path, what=what, max_bytes=max_bytes), where=f"{what} {path}")


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested deeper than ``MAX_YAML_DEPTH`` as they are composed."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _TooLarge(f"nests deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _TooLarge(Exception):
    pass


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expanded(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand past ``MAX_YAML_NODES`` nodes or ``MAX_YAML_DEPTH`` levels,
    or that refers to itself; each node is visited once (sizes of shared nodes are remembered)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            on_path.discard(key)
            if size[key] > MAX_YAML_NODES:
                raise _TooLarge(f"expands to more than {MAX_YAML_NODES:,} values through its aliases")
            if depth[key] > MAX_YAML_DEPTH:
                raise _TooLarge(f"nests deeper than {MAX_YAML_DEPTH} levels through its aliases")
            continue
        if key in size:
            continue
        if key in on_path:
            raise _TooLarge("holds an alias that refers to itself")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in _children(node) if id(kid) not in size)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(str(problem).split())[:MAX_SHOWN] + where


def load_yaml(text: str, *, where: str) -> Any:
    """Parse one YAML document with the safe loader, within the bounds of this module.

    ``ConfigError`` of one line for invalid YAML, tags that are not plain data (``!!python/...``),
    documents too deep or too large once their aliases are expanded, and aliases that refer to themselves.
    """
    try:
        loader = _BoundedLoader(text)  # its reader refuses characters YAML does not allow, here already
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {_yaml_problem(exc)}.") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded(node)
        return loader.construct_document(node)
    except _TooLarge as exc:
        raise ConfigError(f"{where} is refused: its YAML {exc}.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {_yaml_problem(exc)}.") from None
    except RecursionError:
        raise ConfigError(f"{where} is refused: its YAML nests too deeply.") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path, *, what: str, max_bytes: int = MAX_TEXT_BYTES) -> Any:
    """A YAML file from outside: ``read_text`` and then ``load_yaml``."""
    return load_yaml(read_text(path, what=what, max_bytes=max_bytes), where=f"{what} {path}")
