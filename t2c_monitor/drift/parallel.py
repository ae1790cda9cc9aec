"""Chunks of concepts on a few threads: the one parallel pattern of the drift audit.

Preparing a baseline (sorting each concept's scores, its mean and spread) and scoring a window (KS
per concept) are both independent per concept. They run over chunks of ``_CHUNK`` concepts, which
keeps each side's chunk in cache, on up to ``workers`` threads: numpy's sort and search release
the GIL, so threads suffice and nothing is copied between processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_CHUNK = 64  # concepts sorted and searched together: keeps each side's chunk in cache


def over_concept_chunks(fn: Callable[[int, int], None], k: int, workers: int) -> None:
    """Run ``fn(j0, j1)`` over chunks of concept indices on up to ``workers`` threads (numpy's
    sort and search release the GIL)."""
    starts = range(0, k, _CHUNK)
    if workers <= 1 or k <= _CHUNK:
        for j0 in starts:
            fn(j0, min(j0 + _CHUNK, k))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda j0: fn(j0, min(j0 + _CHUNK, k)), starts))


def default_workers(workers: int | None) -> int:
    return min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
