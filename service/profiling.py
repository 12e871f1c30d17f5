"""Running a request's work under ``engine.profiler`` and summarising the profile as the API's JSON.

The summary is ``{"rows", "totals", "table", "trace"}``: one row per event name
(``key_averages``, largest self CPU time first, times in microseconds), the totals,
the same rows as PyTorch's text table, and the Chrome trace (Trace Event Format).
The engine's profiler keeps PyTorch's API; what the HTTP response looks like is
decided here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

ROW_LIMIT = 100


def profile_call(work: Callable, *, record_shapes: bool = False, max_events: int | None = None):
    """``(work(), summary)``; the summary's ``wall_time_us`` is how long ``work()`` took.

    ``max_events`` bounds what the profile holds (and the trace the response carries): one
    event more raises ``engine.profiler.ProfileLimitError`` (413).
    """
    from engine.profiler import profile

    with profile(record_shapes=record_shapes, max_events=max_events) as prof:
        start = time.perf_counter_ns()
        result = work()
        wall_time_us = (time.perf_counter_ns() - start) / 1000.0
    return result, summarize(prof, wall_time_us, row_limit=ROW_LIMIT)


def summarize(prof, wall_time_us: float, *, sort_by: str = "self_cpu_time_total", row_limit: int = ROW_LIMIT) -> dict:
    """The finished profile ``prof`` as plain JSON data: ``{"rows", "totals", "table", "trace"}``."""
    events = prof.events()
    rows = events.key_averages()
    self_total = rows.self_cpu_time_total
    totals = {
        "self_cpu_time_total_us": self_total,
        "wall_time_us": wall_time_us,
        "events": len(events),
        "threads": sorted({event.thread for event in events}),
    }
    if prof.use_device:
        totals[f"self_{prof.use_device}_time_total_us"] = sum(row.self_device_time_total for row in rows)
    return {
        "rows": [_row(row, self_total) for row in rows.sorted(sort_by)[:row_limit]],
        "totals": totals,
        "table": rows.table(sort_by=sort_by, row_limit=row_limit),
        "trace": events.chrome_trace(),
    }


def _row(row, self_cpu_total: float) -> dict:
    """One ``key_averages`` row; percentages are of the profile's total self CPU time."""

    def share(part: float) -> float:
        return part * 100.0 / self_cpu_total if self_cpu_total else 0.0

    out = {
        "name": row.key,
        "count": row.count,
        "self_cpu_time_total_us": row.self_cpu_time_total,
        "cpu_time_total_us": row.cpu_time_total,
        "cpu_time_avg_us": row.cpu_time,
        "self_cpu_percent": share(row.self_cpu_time_total),
        "cpu_total_percent": share(row.cpu_time_total),
        "self_device_time_total_us": row.self_device_time_total,
        "device_time_total_us": row.device_time_total,
        "cpu_memory_usage": row.cpu_memory_usage,
        "self_cpu_memory_usage": row.self_cpu_memory_usage,
    }
    if row.input_shapes != "":
        out["input_shapes"] = row.input_shapes
    return out
