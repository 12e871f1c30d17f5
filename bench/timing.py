"""Timing helpers shared by the benchmark modules.

Figures are per call, the median of several repeats of many calls, after a
warm-up. PyTorch runs on one thread so the comparison is like for like.

BLAS threads are measured as users run: nothing is pinned in the environment, so
``import engine`` gives the engine's setting (one thread unless the environment
chose), and ``blas_threads(numpy_default_threads())`` raises the limit back to the
pool numpy's BLAS starts with by itself (one thread per core) for the side-by-side
column.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import engine
from engine import thread_pools


def per_call_seconds(fn, *, number: int | None = None, repeat: int = 7, budget: float = 0.2) -> float:
    """Median seconds per call of ``fn()``; ``number`` calls per repeat (chosen to fill ``budget``)."""
    fn()  # warm-up: caches, lazy imports, allocator
    if number is None:
        number, elapsed = 1, 0.0
        while True:
            start = time.perf_counter()
            for _ in range(number):
                fn()
            elapsed = time.perf_counter() - start
            if elapsed >= budget / repeat or number >= 1 << 20:
                break
            number *= 2
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def engine_threads() -> int:
    """The BLAS threads the engine runs with as a user gets it (``import engine``, nothing else)."""
    return engine.get_num_threads()


def numpy_default_threads() -> int:
    """The BLAS pool numpy's library starts by itself, before ``import engine`` limits it."""
    return thread_pools.library_default_threads() or engine.get_num_threads()


@contextlib.contextmanager
def blas_threads(n: int):
    """Run the block with BLAS limited to ``n`` threads (``engine.set_num_threads``), then restore."""
    before = engine.get_num_threads()
    engine.set_num_threads(n)
    try:
        yield
    finally:
        engine.set_num_threads(before)


def per_call_seconds_by_threads(fn, thread_counts: list[int], *, rounds: int = 3) -> list[float]:
    """``per_call_seconds(fn)`` under each BLAS thread count, best of ``rounds`` with the counts taking
    turns, so that a shared machine's drifting load does not decide which setting wins."""
    best = [float("inf")] * len(thread_counts)
    for _ in range(rounds):
        for i, threads in enumerate(thread_counts):
            with blas_threads(threads):
                best[i] = min(best[i], per_call_seconds(fn, repeat=3))
    return best


def blas_table() -> Table:
    """Which BLAS library and CPU kernel ran, and the two thread settings the benchmarks compare."""
    table = Table(f"BLAS (threadpoolctl.threadpool_info): numpy's default pool {numpy_default_threads()} threads, "
                  f"the engine's setting {engine_threads()}",
                  ["library", "file", "version", "architecture (kernel)", "threading layer", "threads now"])
    for lib in thread_pools.blas_info():
        table.add(lib["library"], lib["file"], lib["version"], lib["architecture"], lib["threading_layer"],
                  lib["threads"])
    return table


def optional_torch():
    """PyTorch on one thread, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


def optional_jax():
    try:
        import jax
    except ImportError:
        return None
    return jax


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def ratio(ours: float | None, other: float | None) -> str:
    if ours is None or other is None:
        return "n/a"
    return f"{ours / other:.2f}x"


class Table:
    """A markdown table, printed and collected for bench/results/latest.md."""

    def __init__(self, title: str, columns: list[str]):
        self.title = title
        self.columns = columns
        self.rows: list[list[str]] = []

    def add(self, *cells) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"
