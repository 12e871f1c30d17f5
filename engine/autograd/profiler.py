"""``engine.autograd.profiler``: PyTorch's older profiler entry point, the same as ``engine.profiler``.

``with engine.autograd.profiler.profile(use_cuda=False) as prof:`` is the
tutorial's spelling; everything lives in ``engine.profiler``.
"""

from engine.profiler import (
    EventList,
    FunctionEvent,
    FunctionEventAvg,
    ProfilerActivity,
    profile,
    record_function,
)

__all__ = ["EventList", "FunctionEvent", "FunctionEventAvg", "ProfilerActivity", "profile", "record_function"]
