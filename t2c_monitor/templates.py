"""Prompt templates that turn a concept phrase into sentences for CLIP's text encoder.

A template is a format string with exactly one ``{}`` where the concept goes. Named sets:

``paper``      the 7 templates of the paper's Appendix E (CLIP's curated ImageNet subset); the default
``imagenet80`` CLIP's 80 ImageNet zero-shot templates
``plain``      the bare phrase, ``{}``
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from t2c_monitor.errors import ConfigError

PAPER_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

DEFAULT_TEMPLATE_SET = "paper"
TEMPLATE_SETS = ("paper", "imagenet80", "plain")


def imagenet80_templates() -> tuple[str, ...]:
    """CLIP's 80 ImageNet templates, as open_clip ships them."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)


def check_template(template: str) -> str:
    """Return ``template`` if it has exactly one empty ``{}`` field and nothing else to format."""
    hint = "write e.g. 'a photo of {}.' (literal braces as '{{' and '}}')"
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ConfigError(f"Template {template!r} is not a valid format string ({exc}): {hint}.") from exc
    if not fields:
        raise ConfigError(
            f"Template {template!r} has no '{{}}' where the concept goes and is not a template set "
            f"({', '.join(TEMPLATE_SETS)}): {hint}."
        )
    if fields != [""]:
        shown = ", ".join("{" + f + "}" for f in fields)
        raise ConfigError(
            f"Template {template!r} must contain exactly one empty '{{}}' where the concept goes, "
            f"but has {shown}: {hint}."
        )
    return template


def _named_set(name: str) -> tuple[str, ...] | None:
    if name == "paper":
        return PAPER_TEMPLATES
    if name == "imagenet80":
        return imagenet80_templates()
    if name == "plain":
        return ("{}",)
    return None


def resolve_templates(templates: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """Template sets (``paper``, ``imagenet80``, ``plain``) and/or format strings -> checked templates.

    ``templates`` is one set name or template, or a list mixing both (``["paper", "{} at dusk"]``):
    sets are expanded in place. A template written twice is refused (it would weigh double in the
    average); a set's template that is already listed is kept once.
    """
    if templates is None:
        templates = DEFAULT_TEMPLATE_SET
    if isinstance(templates, str):
        templates = [templates]
    if not isinstance(templates, Sequence):
        raise ConfigError(
            f"Templates must be a template set name, a format string with '{{}}', or a list of them; got {templates!r}."
        )
    resolved: list[str] = []
    written: set[str] = set()
    for item in templates:
        if not isinstance(item, str):
            raise ConfigError(f"Template {item!r} is not a string: quote it, e.g. 'a photo of {{}}.'.")
        expanded = _named_set(item)
        if expanded is not None:
            resolved.extend(t for t in expanded if t not in resolved)
            continue
        if item in written:
            raise ConfigError(f"Template {item!r} is repeated; list each template once.")
        written.add(item)
        if item not in resolved:
            resolved.append(check_template(item))
    if not resolved:
        raise ConfigError("The template list is empty: give at least one template, e.g. ['a photo of {}.'].")
    return tuple(resolved)
