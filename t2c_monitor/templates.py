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
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ConfigError(
            f"Template {template!r} is not a valid format string ({exc}): write e.g. 'a photo of {{}}.'"
        ) from exc
    if fields != [""]:
        raise ConfigError(
            f"Template {template!r} must contain exactly one '{{}}' where the concept goes (found {len(fields)} "
            "fields); write literal braces as '{{' and '}}'."
        )
    return template


def resolve_templates(templates: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """A named template set (``paper``, ``imagenet80``, ``plain``) or user templates -> checked templates."""
    if templates is None:
        templates = DEFAULT_TEMPLATE_SET
    if isinstance(templates, str):
        if templates == "paper":
            return PAPER_TEMPLATES
        if templates == "imagenet80":
            return imagenet80_templates()
        if templates == "plain":
            return ("{}",)
        if "{}" in templates:
            return (check_template(templates),)
        raise ConfigError(
            f"Unknown template set {templates!r}: use one of {', '.join(TEMPLATE_SETS)}, "
            "or a list of format strings with one '{}'."
        )
    resolved = tuple(check_template(str(t)) for t in templates)
    if not resolved:
        raise ConfigError("The template list is empty: give at least one template, e.g. ['a photo of {}.'].")
    if len(set(resolved)) != len(resolved):
        repeated = sorted({t for t in resolved if resolved.count(t) > 1})
        raise ConfigError(f"Templates repeated: {repeated}; list each template once.")
    return resolved
