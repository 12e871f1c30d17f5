"""The tutorial's profiler cell: its 1000-iteration loop with and without profiling, ours vs PyTorch.

``z = (z / x) * y`` on 2x3 tensors records 2000 ops (and, with a backward,
2004 more backward nodes). Overhead per recorded event is (profiled -
unprofiled) / events, from runs taken in alternation (with and without
profiling, ours and PyTorch's) so that drift on a busy machine hits all
alike; medians over the rounds are reported. ``x`` and ``y``
are drawn so that ``z`` stays finite (the tutorial's ``randn`` data overflows
after a few hundred iterations, and numpy then warns on every op, which
PyTorch does not): we time the profiler, not warnings.

"Recorded op time" is the sum of the ops' self times in the profile: it
should stay below the unprofiled loop, since the profiler's own bookkeeping is
not billed to the ops.
"""

from __future__ import annotations

import statistics
import time

import engine
from bench.timing import Table, fmt_time, optional_torch, ratio

ITERATIONS = 1000
PAIRS = 21


def _program(lib, with_backward):
    lib.manual_seed(0)
    x = (lib.rand(2, 3) + 1).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    z0 = lib.ones(2, 3, requires_grad=True)

    def run():
        z = z0
        for _ in range(ITERATIONS):
            z = (z / x) * y
        if with_backward:
            z.sum().backward()

    return run


class _Subject:
    """One library's loop, timed unprofiled and profiled in alternation (pairs of runs)."""

    def __init__(self, run, profile, op_names):
        self.run = run
        self.profile = profile
        self.op_names = op_names
        self.plain, self.timed, self.differences, self.op_times = [], [], [], []
        self.events = 0

    def profiled(self):
        with self.profile() as prof:
            self.run()
        return prof

    def pair(self):
        start = time.perf_counter()
        self.run()
        middle = time.perf_counter()
        prof = self.profiled()
        end = time.perf_counter()
        self.plain.append(middle - start)
        self.timed.append(end - middle)
        self.differences.append((end - middle) - (middle - start))
        self.op_times.append(sum(r.self_cpu_time_total for r in prof.key_averages() if r.key in self.op_names) * 1e-6)
        self.events = len(prof.function_events)

    def medians(self):
        median = statistics.median
        return median(self.plain), median(self.timed), median(self.differences), median(self.op_times), self.events


def run() -> list[Table]:
    torch = optional_torch()
    table = Table(f"Profiler: the tutorial's loop, {ITERATIONS} iterations of z = (z / x) * y on 2x3",
                  ["case", "engine", "PyTorch", "engine / PyTorch"])
    for with_backward in (False, True):
        label = "forward + backward" if with_backward else "forward"
        subjects = [_Subject(_program(engine, with_backward), engine.autograd.profiler.profile,
                             {"engine::div", "engine::mul"})]
        if torch is not None:
            subjects.append(_Subject(_program(torch, with_backward), torch.autograd.profiler.profile,
                                     {"aten::div", "aten::mul"}))
        for subject in subjects:  # warm-up
            subject.run()
            subject.profiled()
        for _ in range(PAIRS):  # the libraries alternate too, so load on the machine hits both alike
            for subject in subjects:
                subject.pair()
        ours = subjects[0].medians()
        theirs = subjects[1].medians() if torch is not None else None
        _add(table, f"{label}: unprofiled", ours, theirs, 0)
        _add(table, f"{label}: profiled", ours, theirs, 1)
        # PyTorch also records the aten ops its backward nodes run: overhead is per event recorded.
        counted = f"{ours[4]} ours, {theirs[4] if theirs else 'n/a'} PyTorch"
        _add(table, f"{label}: overhead per recorded event ({counted})", ours, theirs, 2, per_event=True)
        if not with_backward:
            _add(table, f"{label}: div + mul recorded self time", ours, theirs, 3)
    return [table]


def _add(table, case, ours, theirs, index, per_event=False):
    mine = ours[index] / ours[4] if per_event else ours[index]
    other = None
    if theirs is not None:
        other = theirs[index] / theirs[4] if per_event else theirs[index]
    table.add(case, fmt_time(mine), fmt_time(other), ratio(mine, other))
