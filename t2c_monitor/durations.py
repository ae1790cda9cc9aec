"""Durations and crons as monitor files and the CLI write them (``10m``, ``6h``, ``0 * * * *``), bounded."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationError

from t2c_monitor.textfiles import clip

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION_S = 100 * 365.25 * 86400


def parse_duration(value: Any) -> timedelta:
    """``90``, ``"90s"``, ``"10m"``, ``"6h"``, ``"2d"``, ``"1w"`` (or a timedelta) as a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 10m, 6h or 2d")  # noqa: TRY004 - pydantic wants ValueError
    if isinstance(value, (int, float)):
        return _bounded(float(value), value)
    match = _DURATION.match(str(value))
    if not match and str(value).startswith("P"):  # ISO 8601, as stored configs hold them
        from pydantic import TypeAdapter

        return TypeAdapter(timedelta).validate_python(value)
    if not match:
        raise ValueError(f"{clip(value)} is not a duration: use a number with s, m, h, d or w, such as 10m or 6h")
    return _bounded(float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"], value)


def _bounded(seconds: float, value: Any) -> timedelta:
    if not (0 <= seconds <= MAX_DURATION_S):  # also NaN
        raise ValueError(f"{clip(value)} is not a duration between 0s and 100 years")
    return timedelta(seconds=seconds)


def _at_least_a_second(value: timedelta) -> timedelta:
    if value < timedelta(seconds=1):
        raise ValueError(f"must be at least 1s, got {format_duration(value)}")
    return value


def format_duration(value: timedelta | float) -> str:
    """A duration as a config writes it (``10m``, ``6h``, ``90s``): the inverse of ``parse_duration``."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_at_least_a_second)]
"""A span that must be there: an interval of 0s would never fire, a window of 0s holds nothing."""


def check_cron(value: str) -> str:
    """``value`` if it is a cron expression Prefect schedules, else a ValueError that says what one is."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=value)
    except ValidationError:
        raise ValueError(f"{value!r} is not a cron expression (five fields: minute hour day month "
                         "weekday)") from None
    return value
