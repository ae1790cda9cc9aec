"""How t2c says a change in words, in one place: every table, alert, report and log line uses it."""

from __future__ import annotations


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
