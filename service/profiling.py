"""Running a request's work under ``engine.profiler`` and summarising it for JSON."""

from __future__ import annotations

from collections.abc import Callable

ROW_LIMIT = 100


def profile_call(work: Callable, *, record_shapes: bool = False):
    """``(work(), summary)`` where summary is ``{"rows", "totals", "table", "trace"}``."""
    from engine.profiler import profile

    with profile(record_shapes=record_shapes) as prof:
        result = work()
    return result, prof.summary(row_limit=ROW_LIMIT)
