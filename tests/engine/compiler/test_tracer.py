"""What a trace records (engine.compiler.tracer): slots, steps, guards, random draws, breaks."""

from __future__ import annotations

import importlib
import threading

import engine
from engine import creation
from engine.autograd import function
from engine.compiler import tracer
from engine.compiler.tracer import ARGUMENT, CAPTURED, CONSTANT, RANDOM, STEP, GuardStep, OpStep, RandomStep, Tracer


def _trace(fn, *args):
    recording = Tracer()
    for position, value in enumerate(args):
        recording.argument(value, position)
    with tracer.recording(recording):
        result = fn(*args)
    recording.check_unchanged()
    return recording, result


def test_slots_say_where_each_value_comes_from():
    w = engine.tensor([1.0, 2.0])

    def fn(x):
        return (x * w + 3.0) * engine.rand(2)

    recording, _ = _trace(fn, engine.tensor([0.5, 0.5]))
    kinds = recording.kinds
    assert kinds[0] == ARGUMENT
    assert CAPTURED in kinds and CONSTANT in kinds and RANDOM in kinds and STEP in kinds
    (captured,) = recording.captured.values()
    assert captured is w
    ops = [s.op.name for s in recording.steps if isinstance(s, OpStep)]
    assert ops == ["mul", "add", "mul"]
    assert sum(isinstance(s, RandomStep) for s in recording.steps) == 1
    assert recording.broken is None


def test_values_reaching_python_become_guards_in_order():
    def fn(x):
        y = x * 2
        if y.sum() > 0:
            y = y + 1
        return y, int(y.max().item())

    recording, _ = _trace(fn, engine.tensor([1.0, 2.0]))
    guards = [s for s in recording.steps if isinstance(s, GuardStep)]
    assert [(g.how, g.seen) for g in guards] == [("item", True), ("item", 5.0)]
    positions = [i for i, s in enumerate(recording.steps) if isinstance(s, GuardStep)]
    assert positions[0] == 3  # after mul, sum and gt: recomputed there on replay


def test_in_place_writes_and_data_swaps_are_graph_breaks():
    def in_place(x):
        y = x * 1
        y.mul_(2)
        return y

    recording, _ = _trace(in_place, engine.tensor([1.0]))
    assert "in-place" in recording.broken

    def swap(x):
        y = x * 1
        y.data = engine.tensor([5.0])
        return y + 1

    recording, _ = _trace(swap, engine.tensor([1.0]))
    assert ".data replaced" in recording.broken


tensor_module = importlib.import_module("engine.tensor")


def test_hooks_are_installed_only_while_tracing():
    assert function.trace_hook is None and tensor_module.value_hook is None and creation.random_hook is None
    with tracer.recording(Tracer()):
        assert function.trace_hook is not None and tensor_module.value_hook is not None
    assert function.trace_hook is None and tensor_module.value_hook is None and creation.random_hook is None


def test_a_trace_records_only_its_own_context():
    recording = Tracer()
    started, done = threading.Event(), threading.Event()

    def other_thread():
        started.wait()
        engine.tensor([1.0]).sin()  # another request's op, while the trace is open
        done.set()

    worker = threading.Thread(target=other_thread)
    worker.start()
    with tracer.recording(recording):
        started.set()
        done.wait(10)
    worker.join()
    assert recording.steps == []
