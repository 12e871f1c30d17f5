"""Budgets: result-size estimates, the elements and deadline checks, steps, and context isolation."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import engine
from engine import ops
from frontends import budget as budget_module
from frontends.budget import Budget, BudgetExceeded, enforce, estimate_elements


def test_no_budget_no_checks():
    assert budget_module.active_budget() is None
    big = engine.ones(10).reshape(-1, 1) * engine.ones(20)
    assert big.numel() == 200


def test_enforce_is_scoped_to_the_block():
    with enforce(Budget(max_elements=5)):
        assert budget_module.active_budget().max_elements == 5
        with pytest.raises(BudgetExceeded):
            engine.ones(3).reshape(-1, 1) * engine.ones(3)
    assert budget_module.active_budget() is None
    assert (engine.ones(3).reshape(-1, 1) * engine.ones(3)).numel() == 9


# Each case: a function of x making a result, so the estimate can be compared with the truth.
GROWING = [
    ("expand", lambda x: x.reshape(1, -1).expand(4, 6)),
    ("tile", lambda x: x.reshape(2, 3).repeat(2, 1, 3)),
    ("outer", lambda x: engine.outer(x, x[:4])),
    ("matmul-batched", lambda x: x.reshape(2, 3, 1) @ x[:2].reshape(1, 2)),
    ("matmul-vector", lambda x: x.reshape(2, 3) @ x[:3]),
    ("broadcast", lambda x: x.reshape(6, 1) + x[:5]),
    ("where", lambda x: engine.where(x.reshape(6, 1) > 0, x[:2], 0.0)),
    ("getitem-slices", lambda x: x.reshape(2, 3)[None, :, 1:]),
    ("getitem-int", lambda x: x.reshape(2, 3)[1]),
    ("getitem-arrays", lambda x: x.reshape(2, 3)[engine.tensor([[0, 1, 1, 0]]), 1:]),
    ("getitem-mask", lambda x: x[x > 0.3]),
    ("cat", lambda x: engine.cat([x, x[:2]])),
    ("stack", lambda x: engine.stack([x, x, x])),
]


class Recorder:
    """An op observer comparing each op's estimated result size with its real one."""

    def __init__(self):
        self.seen = []

    def before(self, op, inputs, params):
        shapes = [tuple(v.shape) for v in inputs if isinstance(v, engine.Tensor)]
        self.pending = (op, estimate_elements(op, shapes, params))

    def after(self, op, result):
        _, estimate = self.pending
        self.seen.append((op.name, estimate, result.numel()))


@pytest.mark.parametrize(("name", "make"), GROWING, ids=[g[0] for g in GROWING])
def test_estimates_equal_the_real_result_size(name, make):
    from engine.autograd import function

    recorder = Recorder()
    function.op_observers.append(recorder)
    try:
        make(engine.tensor([0.1, 0.5, -0.2, 0.9, 0.4, -0.7]))
    finally:
        function.op_observers.remove(recorder)
    assert recorder.seen
    for op_name, estimate, actual in recorder.seen:
        if estimate is not None:
            assert estimate == actual, (op_name, estimate, actual)
        else:  # ops without an estimate never produce more than their largest input
            assert actual <= 6, (op_name, actual)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x.expand(10**6, 10**6),
        lambda x: x.repeat(10**5, 10**5),
        lambda x: engine.outer(x.expand(10**5), x.expand(10**5)),
        lambda x: x.expand(10**5, 1) * x.expand(10**5),
        lambda x: x.expand(10**5, 1) @ x.expand(1, 10**5),
        lambda x: x.expand(1, 10**5)[engine.zeros(10**5, dtype="int64")],
    ],
    ids=["expand", "tile", "outer", "broadcast", "matmul", "getitem-arrays"],
)
def test_huge_results_are_refused_before_they_are_computed(make):
    x = engine.tensor([1.0])
    with enforce(Budget(max_elements=10**6)), pytest.raises(BudgetExceeded) as caught:
        make(x)
    assert caught.value.kind == "elements" and caught.value.limit == 10**6
    assert "more than the limit" in caught.value.message


def test_results_are_checked_after_ops_without_an_estimate():
    x = engine.ones(10)
    with enforce(Budget(max_elements=5)), pytest.raises(BudgetExceeded, match="the result of sin"):
        x.sin()


def test_deadline_stops_a_loop_of_ops():
    x = engine.ones(3)
    with enforce(Budget(deadline_s=0.05)), pytest.raises(BudgetExceeded) as caught:
        while True:
            x = x + 1
    assert caught.value.kind == "deadline" and caught.value.limit == 0.05


def test_nested_budgets_keep_the_earlier_deadline():
    with enforce(Budget(deadline_s=0.0)):
        with enforce(Budget(deadline_s=1000.0)), pytest.raises(BudgetExceeded) as caught:
            engine.ones(2) + 1
        assert caught.value.kind == "deadline"


def test_enforcement_survives_a_reset_of_the_observer_list():
    from engine.autograd import function

    saved = list(function.op_observers)
    function.op_observers.clear()
    try:
        with enforce(Budget(max_elements=5)), pytest.raises(BudgetExceeded):
            engine.ones(10) * 2
    finally:
        function.op_observers[:] = saved + [o for o in function.op_observers if o not in saved]


def test_nested_blocks_enforce_the_stricter_limits():
    with enforce(Budget(max_elements=5)):
        with enforce(Budget()), pytest.raises(BudgetExceeded) as caught:
            engine.ones(10) * 2
        assert caught.value.limit == 5
    with enforce(Budget()), enforce(Budget(max_elements=5)), pytest.raises(BudgetExceeded):
        engine.ones(10) * 2


def test_count_ops_charges_steps():
    x = engine.ones(2)
    with enforce(Budget(max_steps=10), count_ops=True), pytest.raises(BudgetExceeded) as caught:
        for _ in range(11):
            x = x + 1
    assert caught.value.kind == "steps"
    with enforce(Budget(max_steps=10)):  # without count_ops ops are free
        for _ in range(20):
            x = x + 1
    assert x[0].item() == 31.0


def test_charge_and_check_elements_without_a_budget_do_nothing():
    budget_module.charge(10**9)
    budget_module.check_elements(10**18, "anything")
    assert budget_module.steps_left() is None


def test_budget_in_one_thread_does_not_affect_another():
    inside, outside = threading.Barrier(2), threading.Barrier(2)
    results = {}

    def limited():
        with enforce(Budget(max_elements=5)):
            inside.wait()  # the other thread runs its big op while this budget is active
            outside.wait()
            try:
                engine.ones(10) * 2
                results["limited"] = "ran"
            except BudgetExceeded as error:
                results["limited"] = error.kind

    def free():
        inside.wait()
        results["free"] = (engine.ones(10) * 2).numel()
        outside.wait()

    threads = [threading.Thread(target=limited), threading.Thread(target=free)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"limited": "elements", "free": 10}


def test_budget_in_one_task_does_not_affect_another():
    async def limited(started, done):
        with enforce(Budget(max_elements=5)):
            started.set()
            await done.wait()
            with pytest.raises(BudgetExceeded):
                engine.ones(10) * 2
        return "refused"

    async def free(started, done):
        await started.wait()
        size = (engine.ones(10) * 2).numel()
        done.set()
        return size

    async def main():
        started, done = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(limited(started, done), free(started, done))

    assert asyncio.run(main()) == ["refused", 10]


def test_estimates_are_exact_for_broadcast_shapes():
    op = ops.table["add"]
    for shapes in [((3, 1), (1, 4)), ((2, 1, 5), (7, 1)), ((), (4,))]:
        expected = np.broadcast_shapes(*shapes)
        assert estimate_elements(op, list(shapes), {}) == int(np.prod(expected))


def test_live_elements_add_up_across_tensors():
    from frontends.program import compile_program

    keep_all = compile_program("xs = [zeros(10**5) + i for i in range(20)]\nreturn xs[0]", [])
    with enforce(Budget(max_live_elements=10**6)), pytest.raises(BudgetExceeded) as caught:
        keep_all()
    assert caught.value.kind == "elements" and "live tensors" in caught.value.message


def test_freed_tensors_are_released():
    from frontends.program import compile_program

    churn = compile_program("y = zeros(1)\nfor i in range(50):\n    y = zeros(10**5) + i\nreturn y.sum()", [])
    with enforce(Budget(max_live_elements=10**6)):
        assert churn().item() == 49 * 10**5


def test_a_wide_linear_layer_is_judged_by_its_result_not_its_weight():
    # 16 x 1000 inputs through a 1000 -> 10000 layer: a 16 x 10000 result (1.6e5), though the
    # weight alone holds 1e7 numbers (a broadcast estimate of the operands would say 1e7).
    x, w, b = engine.zeros(16, 1000), engine.zeros(10000, 1000), engine.zeros(10000)
    with enforce(Budget(max_elements=200_000)):
        assert engine.nn.functional.linear(x, w, b).shape == (16, 10000)
    with enforce(Budget(max_elements=100_000)), pytest.raises(BudgetExceeded, match="160000"):
        engine.nn.functional.linear(x, w, b)


# ---- replays of compiled plans (engine.compile runs no table op while it replays) ----


def _replaying(fn, *args):
    """``engine.compile(fn)``, traced and replayed once on ``args`` with no budget."""
    compiled = engine.compile(fn)
    compiled(*args)
    compiled(*args)
    assert compiled.last_call.kind == "replayed"
    return compiled


def _refusal(call, budget: Budget, count_ops: bool = False) -> BudgetExceeded:
    with enforce(budget, count_ops=count_ops), pytest.raises(BudgetExceeded) as caught:
        call()
    return caught.value


def test_a_budget_lets_a_plan_replay():
    x = engine.linspace(0.0, 1.0, 8, dtype=engine.float64)
    compiled = _replaying(lambda t: (t.sin() * 2).sum(), x)
    with enforce(Budget(), count_ops=True):
        out = compiled(x)
    assert compiled.last_call.kind == "replayed"
    assert out.item() == pytest.approx(2 * np.sin(np.linspace(0.0, 1.0, 8)).sum(), rel=1e-12)


def test_a_replay_past_the_element_limit_is_refused_as_eager_is():
    def fn(t):
        return t.sin() * 2

    x = engine.ones(100)
    compiled = _replaying(fn, x)
    calls = len(compiled.history)
    eager = _refusal(lambda: fn(x), Budget(max_elements=50))
    replay = _refusal(lambda: compiled(x), Budget(max_elements=50))
    assert (replay.kind, replay.limit) == (eager.kind, eager.limit) == ("elements", 50)
    assert len(compiled.history) == calls  # refused before it ran: neither replayed nor run eagerly


def test_a_replay_past_the_live_elements_is_refused_as_eager_is():
    def fn(t):
        doubled = t * 2
        tripled = doubled * 3
        return doubled + tripled  # three results of 10**4 alive at once at the end

    x = engine.ones(10**4)
    compiled = _replaying(fn, x)
    with enforce(Budget(max_live_elements=35_000)):  # the inputs are not counted, as in eager mode
        compiled(x)
    eager = _refusal(lambda: fn(x), Budget(max_live_elements=25_000))
    replay = _refusal(lambda: compiled(x), Budget(max_live_elements=25_000))
    assert (replay.kind, replay.limit) == (eager.kind, eager.limit) == ("elements", 25_000)


def test_a_replay_past_the_deadline_is_refused_as_eager_is():
    def fn(t):
        return (t.exp() + 1).sum()

    x = engine.ones(4)
    compiled = _replaying(fn, x)
    eager = _refusal(lambda: fn(x), Budget(deadline_s=0.0))
    replay = _refusal(lambda: compiled(x), Budget(deadline_s=0.0))
    assert (replay.kind, replay.limit) == (eager.kind, eager.limit) == ("deadline", 0.0)


def test_a_replay_counts_its_ops_as_steps():
    def fn(t):
        for _ in range(11):
            t = t + 1
        return t

    x = engine.ones(2)
    compiled = _replaying(fn, x)
    with enforce(Budget(max_steps=11), count_ops=True):
        compiled(x)
    eager = _refusal(lambda: fn(x), Budget(max_steps=10), count_ops=True)
    replay = _refusal(lambda: compiled(x), Budget(max_steps=10), count_ops=True)
    assert (replay.kind, replay.limit) == (eager.kind, eager.limit) == ("steps", 10)
