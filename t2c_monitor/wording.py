"""How t2c says a change in words, in one place: every table, alert, report and log line uses it."""

from __future__ import annotations

from datetime import timedelta


def change_word(direction: float, *, countable: bool = False) -> str:
    """"more" for a concept that grew (``direction`` > 0), "less" (or "fewer" for countable things,
    such as the images that express a concept) for one that fell."""
    if direction > 0:
        return "more"
    return "fewer" if countable else "less"


def concept_change(name: str, direction: float, *, countable: bool = False, quoted: bool = False) -> str:
    """'more night', or "fewer 'grass'" with ``quoted`` and ``countable``."""
    shown = f"'{name}'" if quoted else name
    return f"{change_word(direction, countable=countable)} {shown}"


def elapsed(span: timedelta) -> str:
    """A time span as people say it, to the minute, its two largest parts: ``1d 3h``, ``5h 20m``, ``12m``."""
    minutes = max(int(span.total_seconds() // 60), 0)
    parts = [(minutes // 1440, "d"), (minutes % 1440 // 60, "h"), (minutes % 60, "m")]
    said = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(said) if said else "under a minute"
