"""Rendering reports: one jinja2 environment over the package's templates, HTML autoescaped.

Templates live in ``t2c_monitor/reports/templates``: ``*.html.j2`` pages extend ``base.html.j2``
(one self-contained page: styles inline, charts and thumbnails as data URIs) and are autoescaped,
so a concept named ``<script>`` is text; ``*.md.j2`` are the Markdown digests alert channels
receive (not HTML-escaped; Markdown's own specials in user text are escaped by ``md``).
"""

from __future__ import annotations

import os
import re
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")


def md(text: Any) -> str:
    """User text made literal in Markdown (``*``, ``_``, ``[``, ``<`` ... escaped)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))  # a newline in a name would start a new block


def pct(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


@cache
def environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("t2c_monitor.reports", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters.update(md=md, pct=pct, zip=lambda a, b: zip(a, b, strict=False))
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def write_atomically(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory, so a reader (or a
    failure half-way, a full disk) never sees a partial page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
