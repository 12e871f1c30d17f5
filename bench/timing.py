"""Timing helpers shared by the benchmark modules.

Figures are per call, the median of several repeats of many calls, after a
warm-up. PyTorch runs on one thread so the comparison is like for like.
"""

from __future__ import annotations

import statistics
import time


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
