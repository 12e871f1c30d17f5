"""engine.profiler: the tutorial's profiler cell, key_averages tables, Chrome traces, threads."""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections import Counter

import pytest

import engine as torch
from engine import profiler
from engine.autograd import function as function_module
from engine.profiler import profile, record_function

backward_module = profiler._backward


def tutorial_tensors():
    x = torch.randn(2, 3, requires_grad=True)
    y = torch.rand(2, 3, requires_grad=True)
    z = torch.ones(2, 3, requires_grad=True)
    return x, y, z


def tutorial_loop(x, y, z, iterations=1000):
    for _ in range(iterations):
        z = (z / x) * y
    return z


def counts(prof):
    return {row.key: row.count for row in prof.key_averages()}


def rule_columns(rule):
    """(start, end) of each dashed segment of a rule line."""
    columns, start = [], None
    for i, char in enumerate(rule + " "):
        if char == "-" and start is None:
            start = i
        elif char != "-" and start is not None:
            columns.append((start, i))
            start = None
    return columns


def table_rows(text):
    """The data lines of a table: between the second and third dashed rule."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("-")]
    return lines[rules[1] + 1 : rules[2]]


# ---- the tutorial's cell ------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (z / x) * y overflows, as in the tutorial
def test_tutorial_cell_counts_every_div_and_mul():
    x, y, z = tutorial_tensors()
    with torch.autograd.profiler.profile(use_cuda=False) as prf:
        tutorial_loop(x, y, z)
    assert counts(prf) == {"engine::div": 1000, "engine::mul": 1000}
    text = prf.key_averages().table(sort_by="self_cpu_time_total")
    lines = text.splitlines()
    assert lines[0].startswith("-") and set(lines[0]) <= {"-", " "}
    assert lines[1].split() == ["Name", "Self", "CPU", "%", "Self", "CPU", "CPU", "total", "%", "CPU", "total",
                                "CPU", "time", "avg", "#", "of", "Calls"]
    for start, end in rule_columns(lines[0]):  # every header is right-aligned in its column
        assert lines[1][end - 1] != " " and lines[1][start:end].strip()
    assert lines[-1].startswith("Self CPU time total: ")
    rows = table_rows(text)
    assert [row.split()[0] for row in rows] == sorted(
        ["engine::div", "engine::mul"], key=lambda n: -next(r.self_cpu_time_total for r in prf.key_averages()
                                                             if r.key == n))
    for row in rows:
        cells = row.split()
        assert cells[1].endswith("%") and cells[-1] == "1000"
        assert any(cells[2].endswith(unit) for unit in ("us", "ms", "s"))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_backward_nodes_appear_with_their_counts():
    x, y, z = tutorial_tensors()
    with profile() as prof:
        out = tutorial_loop(x, y, z, iterations=50).sum()
        out.backward()
    found = counts(prof)
    assert found == {"engine::div": 50, "engine::mul": 50, "engine::sum": 1, "SumBackward0": 1,
                     "MulBackward0": 50, "DivBackward0": 50, "AccumulateGrad": 3}


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_counts_match_pytorch_profiler(torch):
    """The same program under torch.autograd.profiler: its aten:: ops and backward nodes, counted."""
    import engine

    def program(lib):
        x = lib.randn(2, 3, requires_grad=True)
        y = lib.rand(2, 3, requires_grad=True)
        z = lib.ones(2, 3, requires_grad=True)
        for _ in range(20):
            z = (z / x) * y
        z.sum().backward()

    with engine.autograd.profiler.profile() as mine:
        program(engine)
    with torch.autograd.profiler.profile() as theirs:
        program(torch)
    # PyTorch's backward nodes run aten ops inside them; compare the forward ops at top level.
    their_counts = Counter(e.name for e in theirs.function_events
                           if e.cpu_parent is None or not e.name.startswith("aten::"))
    for name, count in counts(mine).items():
        torch_name = {"AccumulateGrad": "torch::autograd::AccumulateGrad"}.get(name, name.replace("engine::", "aten::"))
        assert their_counts[torch_name] == count, name


# ---- times --------------------------------------------------------------------------------


def nested_program():
    a = torch.rand(3, 4, requires_grad=True)
    with record_function("outer"):
        b = a * 2
        with record_function("inner"):
            c = b.sin()
            d = c.exp()
        out = d.sum()
    out.backward()


def test_self_times_are_non_negative_and_sum_to_at_most_the_total():
    with profile() as prof:
        start = time.perf_counter_ns()
        nested_program()
        wall = (time.perf_counter_ns() - start) / 1000.0
    rows = prof.key_averages()
    assert all(row.self_cpu_time_total >= 0 for row in rows)
    assert all(row.self_cpu_time_total <= row.cpu_time_total + 1e-9 for row in rows)
    assert sum(row.self_cpu_time_total for row in rows) <= wall
    for event in prof.events():
        children = sum(child.cpu_time_total for child in event.cpu_children)
        assert event.self_cpu_time_total == pytest.approx(event.cpu_time_total - children, abs=1e-3)
        assert event.cpu_time_total <= event.time_range.elapsed_us() + 1e-9


def test_nested_record_function_ranges_contain_their_children():
    with profile() as prof:
        nested_program()
    by_name = {e.name: e for e in prof.events()}
    outer, inner = by_name["outer"], by_name["inner"]
    assert inner.cpu_parent is outer
    assert {e.name for e in inner.cpu_children} == {"engine::sin", "engine::exp"}
    assert {e.name for e in outer.cpu_children} == {"engine::mul", "inner", "engine::sum"}
    assert by_name["SumBackward0"].cpu_parent is None  # backward ran after the ranges closed
    for parent in (outer, inner):
        for child in parent.cpu_children:
            assert parent.time_range.start <= child.time_range.start
            assert child.time_range.end <= parent.time_range.end
        assert parent.cpu_time_total >= sum(c.cpu_time_total for c in parent.cpu_children)


def test_record_function_as_decorator_and_outside_a_profile():
    @record_function("step")
    def step(t):
        return t * 3

    t = torch.ones(2)
    step(t)  # no profile: nothing recorded, nothing raised
    with profile() as prof:
        step(t)
        step(t)
    found = counts(prof)
    assert found == {"step": 2, "engine::mul": 2}
    assert all(e.cpu_parent.name == "step" for e in prof.events() if e.name == "engine::mul")


def test_create_graph_ops_nest_inside_backward_nodes():
    x = torch.tensor([0.5, 1.5], requires_grad=True)
    with profile() as prof:
        y = (x.sin() * x).sum()
        torch.autograd.grad(y, x, create_graph=True)
    nodes = [e for e in prof.events() if e.name.endswith("Backward0")]
    assert {e.name for e in nodes} == {"SumBackward0", "MulBackward0", "SinBackward0"}
    nested = [e for e in prof.events() if e.cpu_parent is not None]
    assert nested and all(e.name.startswith("engine::") and e.cpu_parent in nodes for e in nested)
    for node in nodes:
        assert 0 <= node.self_cpu_time_total <= node.cpu_time_total


# ---- tables -------------------------------------------------------------------------------


@pytest.mark.parametrize("sort_by", ["self_cpu_time_total", "cpu_time_total", "cpu_time", "count"])
def test_sort_by_orders_rows(sort_by):
    with profile() as prof:
        nested_program()
        for _ in range(3):
            torch.ones(2) + 1
    rows = prof.key_averages().sorted(sort_by)
    values = [getattr(row, sort_by) for row in rows]
    assert values == sorted(values, reverse=True)
    names = [line.split()[0] for line in table_rows(prof.key_averages().table(sort_by=sort_by))]
    assert names == [row.key[:52] for row in rows]


def test_unknown_sort_key_names_the_choices():
    with profile() as prof:
        torch.ones(2) * 2
    with pytest.raises(ValueError, match="self_cpu_time_total"):
        prof.key_averages().table(sort_by="speed")


def test_row_limit_cuts_the_table():
    with profile() as prof:
        nested_program()
    rows = prof.key_averages()
    assert len(rows) > 3
    assert len(table_rows(rows.table(row_limit=3))) == 3
    assert len(table_rows(rows.table(row_limit=100))) == len(rows)


def test_times_scale_like_pytorch():
    assert profiler._format_time(2.28) == "2.280us"
    assert profiler._format_time(4570.0) == "4.570ms"
    assert profiler._format_time(2_500_000.0) == "2.500s"
    assert profiler._format_share(9.12, 21.539) == "42.34%"


def test_shapes_and_memory_are_recorded_when_asked():
    a, b = torch.ones(2, 3), torch.ones(4)
    with profile(record_shapes=True, profile_memory=True) as prof:
        a * 2.0
        a + a
        b + b
    rows = {(r.key, r.input_shapes): r for r in prof.key_averages(group_by_input_shape=True)}
    assert set(rows) == {("engine::mul", "[[2, 3], []]"), ("engine::add", "[[2, 3], [2, 3]]"),
                         ("engine::add", "[[4], [4]]")}
    assert rows[("engine::add", "[[4], [4]]")].self_cpu_memory_usage == 4 * 4  # float32 result
    assert rows[("engine::mul", "[[2, 3], []]")].cpu_memory_usage == 6 * 4
    text = prof.key_averages(group_by_input_shape=True).table()
    assert "Input Shapes" in text and "Self CPU Mem" in text and "[[4], [4]]" in text
    assert {r.input_shapes for r in prof.key_averages()} == {""}


# ---- traces -------------------------------------------------------------------------------


def assert_well_formed_and_nested(trace):
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert complete
    for event in complete:
        assert {"name", "ph", "ts", "dur", "pid", "tid", "args", "cat"} <= set(event)
        assert isinstance(event["name"], str) and event["dur"] >= 0 and event["ts"] >= 0
    by_thread: dict = {}
    for event in complete:
        by_thread.setdefault((event["pid"], event["tid"]), []).append(event)
    for events in by_thread.values():  # a sweep: each event ends inside every event still open
        open_ends: list = []
        for event in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
            start, end = round(event["ts"] * 1000), round((event["ts"] + event["dur"]) * 1000)
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1], f"{event['name']} overlaps its parent"
            open_ends.append(end)
    return complete


def test_chrome_trace_is_valid_json_with_nested_events(tmp_path):
    with profile(record_shapes=True) as prof:
        nested_program()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    trace = json.loads(path.read_text())
    complete = assert_well_formed_and_nested(trace)
    assert Counter(e["name"] for e in complete) == Counter(e.name for e in prof.events())
    mul = next(e for e in complete if e["name"] == "engine::mul")
    assert mul["args"]["Input Dims"] == [[3, 4], []] and mul["cat"] == "cpu_op"
    assert next(e for e in complete if e["name"] == "outer")["cat"] == "user_annotation"


# ---- contexts, threads, errors ------------------------------------------------------------


def test_two_threads_profiling_at_once_see_only_their_own_ops():
    barrier = threading.Barrier(2)
    results = {}

    def work(name, op):
        t = torch.ones(3, requires_grad=True)
        barrier.wait()
        with profile() as prof:
            barrier.wait()  # both profiles are active from here on
            for _ in range(200):
                getattr(t, op)()
            barrier.wait()
        results[name] = counts(prof)
        results[name + " threads"] = {e.thread for e in prof.events()}

    threads = [threading.Thread(target=work, args=("a", "sin")), threading.Thread(target=work, args=("b", "cos"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["a"] == {"engine::sin": 200}
    assert results["b"] == {"engine::cos": 200}
    assert len(results["a threads"]) == 1 and results["a threads"] != results["b threads"]


def test_unprofiled_threads_and_code_are_not_recorded():
    t = torch.ones(2)
    started, finish = threading.Event(), threading.Event()

    def other():
        started.set()
        while not finish.is_set():
            t.exp()

    thread = threading.Thread(target=other)
    thread.start()
    started.wait()
    try:
        with profile() as prof:
            t.sin()
    finally:
        finish.set()
        thread.join()
    assert counts(prof) == {"engine::sin": 1}
    assert function_module.op_observers == [] and backward_module.node_observers == []


def test_profile_inside_no_grad():
    x = torch.rand(2, 3, requires_grad=True)
    with torch.no_grad(), profile() as prof:
        y = (x * 2).exp()
    assert y.grad_fn is None
    assert counts(prof) == {"engine::mul": 1, "engine::exp": 1}


def test_an_op_that_raises_leaves_later_events_unnested():
    a, b = torch.ones(2, 3), torch.ones(4)
    with profile() as prof:
        with pytest.raises(Exception):  # noqa: B017 - numpy's broadcast error
            a + b
        a * 2
    assert counts(prof) == {"engine::mul": 1}
    assert all(e.cpu_parent is None for e in prof.events())


def test_a_backward_that_raises_leaves_later_events_unnested():
    x = torch.rand(3, requires_grad=True)
    with profile() as prof:
        out = (x.exp() * 2).sum()
        out.backward()
        with pytest.raises(RuntimeError, match="retain_graph=True"):
            out.backward()
        x.sin()
    events = prof.events()
    assert next(e for e in events if e.name == "engine::sin").cpu_parent is None
    assert_well_formed_and_nested(prof.chrome_trace())


def test_results_need_the_profile_to_have_finished():
    with profile() as prof:
        with pytest.raises(RuntimeError, match="didn't finish"):
            prof.key_averages()
        with pytest.raises(RuntimeError, match="already enabled"), profile():
            pass


def test_disabled_profile_records_nothing():
    with profile(enabled=False) as prof:
        torch.ones(2) * 2
    assert len(prof.key_averages()) == 0 and prof.key_averages().table() == ""


def test_use_cuda_is_deprecated_like_pytorch():
    deprecation = r"use_cuda` will be deprecated soon, please use ``use_device = 'cuda'``"
    with warnings.catch_warnings(), pytest.warns(FutureWarning, match=deprecation):
        warnings.simplefilter("ignore", UserWarning)
        prof = profile(use_cuda=True)
    with prof:
        torch.ones(2) * 2
    assert counts(prof) == {"engine::mul": 1}


@pytest.mark.host_only
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU fallback")
def test_use_device_cuda_without_a_gpu_warns_and_profiles_the_cpu():
    with pytest.warns(UserWarning, match="CUDA is not available, disabling CUDA profiling"):
        prof = profile(use_device="cuda")
    assert prof.use_device is None
    with prof:
        torch.ones(2) * 2
    assert "CUDA" not in prof.key_averages().table()


def test_autograd_profiler_is_the_same_profiler():
    assert torch.autograd.profiler.profile is torch.profiler.profile
    assert torch.autograd.profiler.record_function is record_function
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.ones(2) * 2
    assert counts(prof) == {"engine::mul": 1}


class FakeDeviceClock:
    """Stands in for CUDA events: a device that takes exactly 5 us per event it brackets."""

    def __init__(self):
        self.marks = 0

    def mark(self):
        self.marks += 1
        return self.marks

    def synchronize(self):
        pass

    def elapsed_us(self, start, end):
        return 5.0 * (end - start + 1) / 2  # an event bracketing n other marks took 5 us per event


def test_device_columns_through_the_device_clock_seam(monkeypatch):
    monkeypatch.setattr(profiler.backend, "cuda_available", lambda: True)
    monkeypatch.setattr(profiler, "_DeviceClock", FakeDeviceClock)
    with profile(use_device="cuda") as prof, record_function("range"):
        torch.ones(2) * 2
    rows = {row.key: row for row in prof.key_averages()}
    assert rows["engine::mul"].device_time_total == pytest.approx(5.0)
    assert rows["range"].device_time_total == pytest.approx(10.0)
    assert rows["range"].self_device_time_total == pytest.approx(5.0)
    text = prof.key_averages().table()
    assert "Self CUDA" in text and "CUDA time avg" in text
    assert text.splitlines()[-1] == "Self CUDA time total: 10.000us"


def test_events_table_lists_each_event():
    x = torch.rand(3, requires_grad=True)
    with profile() as prof:
        (x * 2).sum().backward()
    text = prof.events().table(sort_by=None)
    assert [line.split()[0] for line in table_rows(text)] == [
        "engine::mul", "engine::sum", "SumBackward0", "MulBackward0", "AccumulateGrad"]
    assert "Input Shapes" not in text
