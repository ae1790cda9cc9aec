"""The schema of YAML bank files (see ``definition.py`` for the format), as strict pydantic models.

``BankFile`` is a whole file and ``ConceptEntry`` one item of its ``concepts`` list. Both refuse
keys they do not know, so a typo (``template:``) is an error rather than a setting silently
ignored. Values of the wrong kind are refused with the words users read before the schema was a
model: ``'classes' must be a string or a list of strings, got 5; quote names ...``, and a file's
problems come as one ``ConfigError``, a line each, naming the file and the concept
(``bank.yaml: concepts[2]: ...``). What the YAML and the text format share (blank phrasings,
repeated phrasings or concepts, class names) is checked once for both, in ``definition.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WrapValidator, model_validator
from pydantic_core import PydanticCustomError

from t2c_monitor.errors import ConfigError
from t2c_monitor.templates import resolve_templates
from t2c_monitor.textfiles import MAX_SHOWN, clip


def string_list(value: Any, what: str, *, split: bool = False) -> tuple[str, ...]:
    """``value`` as strings: ``None`` -> none, one string -> one (split at ``|`` with ``split``), a list -> those.

    Anything else is refused: iterating a string would split it into letters, and YAML reads
    ``yes`` or ``42`` as a boolean or a number.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split("|")) if split else (value,)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(
        f"{what} must be a string or a list of strings, got {clip(value)}; quote names that YAML reads as "
        "numbers or booleans, e.g. ['42', 'yes']."
    )


def _refuse(message: str) -> PydanticCustomError:
    """A schema error shown as ``message`` (no context: braces in it are text)."""
    return PydanticCustomError("bank_file", message)


def _checked(check: Callable[[Any], Any]) -> BeforeValidator:
    """Validate a field with ``check``, whose ``ConfigError`` becomes the field's error message."""

    def run(value: Any) -> Any:
        try:
            return check(value)
        except ConfigError as exc:
            raise _refuse(str(exc)) from None

    return BeforeValidator(run)


def _name(value: Any) -> str | None:
    """A name as written; YAML reads ``name: 42`` as a number, which names the bank (or concept) ``42``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"'name' must be a string, got {clip(value)}.")


def _version(value: Any, parse: Callable[[Any], int]) -> int:
    """An integer version (``3`` or ``'3'``), not a boolean nor a fraction."""
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        return parse(value)
    except (ValueError, ValidationError):
        raise _refuse(f"bank version must be an integer, got {clip(value)}.") from None


def _templates(value: Any) -> tuple[str, ...] | None:
    """The templates a file names, resolved (``None``: the file names none, the default applies)."""
    try:
        return None if value is None else resolve_templates(value)
    except ConfigError as exc:
        raise ConfigError(f"templates: {exc}") from None


Name = Annotated[str | None, _checked(_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConceptEntry(_Strict):
    """One item of ``concepts``: ``a | b`` (phrasings, the first names it) or ``{name, phrasings}``."""

    name: Name = None
    phrasings: Annotated[  # none (or empty): the name is the one phrasing
        tuple[str, ...], _checked(lambda v: string_list(v or None, "'phrasings'", split=True))
    ] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_line(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return {"phrasings": raw}
        if isinstance(raw, dict):
            return raw
        raise _refuse(f"a concept must be a string or a mapping with 'name' and 'phrasings', got {clip(raw)}.")


class BankFile(_Strict):
    """A YAML bank file; ``templates`` resolved, ``None`` where the file leaves them to the default."""

    name: Name = None
    version: Annotated[int, WrapValidator(_version)] = 1
    templates: Annotated[tuple[str, ...] | None, _checked(_templates)] = None
    classes: Annotated[tuple[str, ...], _checked(lambda v: string_list(v, "'classes'"))] = ()
    concepts: list[ConceptEntry] = Field(strict=True)  # a list, not a set (whose order YAML does not keep)


BANK_KEYS = tuple(BankFile.model_fields)
_UNKNOWN = ("extra_forbidden", "invalid_key")  # a key not in the schema, or not a string
_SHAPE = "a YAML bank must be a mapping with a 'concepts' list."


def validate_bank_file(doc: Any, source: str) -> BankFile:
    """``doc`` (a parsed YAML bank) as a ``BankFile``, or a ``ConfigError`` with a line per problem.

    Each line reads ``{source}[: concepts[i]]: what is wrong and how to fix it``; a mapping's
    unknown keys are named in one line.
    """
    try:
        return BankFile.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_error_lines(exc, source)) from None


def _error_lines(exc: ValidationError, source: str) -> str:
    unknown: dict[tuple, list[Any]] = {}  # mapping -> its unknown keys, named in one line
    for error in exc.errors():
        if error["type"] in _UNKNOWN:
            unknown.setdefault(error["loc"][:-1], []).append(error["loc"][-1])
    lines: dict[str, None] = {}  # in order, each once
    for error in exc.errors():
        loc = error["loc"]
        in_concept = len(loc) > 1 and loc[0] == "concepts"
        where = f"{source}: concepts[{loc[1]}]" if in_concept else source
        if error["type"] in _UNKNOWN:
            hint = " in concept; use 'name' and 'phrasings'" if in_concept else f"; use {', '.join(BANK_KEYS)}"
            lines[f"{where}: unknown keys {clip(sorted(unknown[loc[:-1]], key=str))}{hint}."] = None
        elif loc in ((), ("concepts",)):
            lines[f"{source}: {_SHAPE}"] = None
        else:
            lines[f"{where}: {error['msg'][:MAX_SHOWN]}"] = None
    shown = list(lines)[:20]  # a file from outside decides how many mistakes it holds
    return "\n".join(shown + ([f"... and {len(lines) - 20} more"] if len(lines) > 20 else []))
