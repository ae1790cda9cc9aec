"""The README's CLI and configuration references, generated from the code they describe.

``python -m t2c_monitor.reference README.md`` rewrites the text between the README's
``<!-- cli-reference -->`` and ``<!-- config-reference -->`` markers; ``tests/test_readme.py`` fails when
what is there differs from what this makes, so neither reference can go stale.
"""

from __future__ import annotations

import re
import sys
import typing
from pathlib import Path
from typing import Any

MARKERS = ("cli-reference", "config-reference")


def _walk(command: Any, ctx: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    if not hasattr(command, "list_commands"):
        return [(path, command)]
    out = []
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is not None and not getattr(sub, "hidden", False):
            out += _walk(sub, ctx, [*path, name])
    return out


def _option(param: Any) -> str:
    names = "/".join([*param.opts, *getattr(param, "secondary_opts", [])])
    if param.param_type_name == "argument":
        names = param.name.upper()
    default = param.default
    shown = ""
    if param.param_type_name == "option" and not getattr(param, "is_flag", False) and default not in (None, (), []):
        shown = f" (default {default})"
    help_text = " ".join((getattr(param, "help", None) or "").split())
    return f"`{names}`{shown}" + (f": {help_text}" if help_text else "")


def cli_reference() -> str:
    """Every ``t2c`` command: its usage line, what it does, its arguments and options."""
    import typer

    from t2c_monitor.cli import app

    root = typer.main.get_command(app)
    ctx = root.make_context("t2c", [], resilient_parsing=True)
    lines = []
    for path, command in _walk(root, ctx, ["t2c"]):
        summary = " ".join((command.help or "").split("\n\n")[0].split())
        params = [p for p in command.params if p.name != "help"]
        lines.append(f"- **`{' '.join(path)}`**: {summary}")
        for p in params:
            lines.append(f"  - {_option(p)}")
    return "\n".join(lines)


def _type_name(annotation: Any) -> str:
    """A field's type in words: ``duration``, ``one of bh, bonferroni``, ``list of str``, ``path or none``."""
    import types
    from datetime import timedelta

    from pydantic import BaseModel

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or none" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is list:
        return "list of " + _type_name(args[0])
    if origin is dict:
        return "mapping"
    if annotation is timedelta:
        return "duration"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and "type" in annotation.model_fields:
        kind = typing.get_args(annotation.model_fields["type"].annotation)
        return f"{kind[0]} channel" if kind else annotation.__name__
    return getattr(annotation, "__name__", str(annotation))


def config_reference() -> str:
    """Every key of a monitor file, section by section, then each kind of alert channel (top-level
    ``channels:``): its type, default and meaning."""
    from t2c_monitor.channels import BlockChannel, EmailChannel, FileChannel, WebhookChannel
    from t2c_monitor.monitors import MonitorConfig

    channels = [(f"channels.NAME (type: {_type_name(c).split()[0]})", c)
                for c in (WebhookChannel, BlockChannel, EmailChannel, FileChannel)]
    return "\n".join(_tables([("monitors[]", MonitorConfig)]) + _tables(channels)).rstrip()


def _tables(queue: list[tuple[str, Any]]) -> list[str]:
    """One table per model of ``queue``; a field that is itself a model is a section of its own, queued."""
    from pydantic import BaseModel

    out: list[str] = []
    for title, model in queue:  # grows while it is read: nested sections follow their parents
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        out += [f"**`{title}`**" + (f": {' '.join(doc.split())}" if doc else ""), "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            annotation = field.annotation
            meaning = " ".join((field.description or "").split())
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                queue.append((name, annotation))
                kind, default = "section", "see below"
                meaning = meaning or " ".join((annotation.__doc__ or "").strip().split("\n\n")[0].split())
            elif typing.get_origin(annotation) is typing.Literal and len(typing.get_args(annotation)) == 1:
                kind, default = f"`{typing.get_args(annotation)[0]}`", "required"
                meaning = meaning or "the kind of channel"
            else:
                kind = _type_name(annotation)
                default = "required" if field.is_required() else _default(field.get_default(call_default_factory=True))
            out.append(f"| `{name}` | {kind} | {default} | {meaning.replace('|', chr(92) + '|')} |")
        out.append("")
    return out


def _default(value: Any) -> str:
    from datetime import timedelta

    from t2c_monitor.durations import format_duration

    if isinstance(value, timedelta):
        return f"`{format_duration(value)}`"
    if value is None:
        return "none"
    if value in ("", [], {}):
        return f"`{value!r}`"
    return f"`{value}`"


def generated() -> dict[str, str]:
    return {"cli-reference": cli_reference(), "config-reference": config_reference()}


def replace_sections(text: str, sections: dict[str, str]) -> str:
    """``text`` with what lies between each ``<!-- name -->`` and ``<!-- /name -->`` replaced."""
    for name, body in sections.items():
        pattern = re.compile(rf"(<!-- {name} -->\n)(?:.*?\n)?(<!-- /{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"the README has no <!-- {name} --> ... <!-- /{name} --> markers")
        text = pattern.sub(lambda m, b=body: m.group(1) + b + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> None:
    path = Path((argv or sys.argv[1:] or ["README.md"])[0])
    path.write_text(replace_sections(path.read_text(), generated()))


if __name__ == "__main__":
    main()
