"""Running a request's work under ``engine.profiler`` and summarising it for JSON."""

from __future__ import annotations

from collections.abc import Callable

ROW_LIMIT = 100


def profile_call(work: Callable, *, record_shapes: bool = False, max_events: int | None = None):
    """``(work(), summary)`` where summary is ``{"rows", "totals", "table", "trace"}``.

    ``max_events`` bounds what the profile holds (and the trace the response carries): one
    event more raises the budget error "events" (413).
    """
    from engine.profiler import profile

    with profile(record_shapes=record_shapes, max_events=max_events) as prof:
        result = work()
    return result, prof.summary(row_limit=ROW_LIMIT)
