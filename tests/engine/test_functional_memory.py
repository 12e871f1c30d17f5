"""What transforms cost, under an active budget: result sizes known before any pass, batched
passes sized to the live-element budget, the deadline between passes; gradcheck and the
profiler bounded the same way.

Result sizes are checked against the transforms' actual results and PyTorch's (when
installed); memory against tracemalloc's count of numpy's allocations. Nothing is timed.
"""

from __future__ import annotations

import importlib
import tracemalloc

import numpy as np
import pytest

import engine
from engine.autograd import functional as F
from engine.budget import Budget, BudgetExceeded, enforce
from engine.profiler import profile

checker = importlib.import_module("engine.autograd.gradcheck")  # the package re-exports the function

CASES = {
    "one input, one output": (lambda x: x.sin() * 2, [(5,)]),
    "matrix output": (lambda x: engine.outer(x, x), [(4,)]),
    "scalar output": (lambda x: (x * x).sum(), [(3, 2)]),
    "two inputs, two outputs": (lambda x, y: (x * y.sum(), (x.sum() * y).exp()), [(3,), (2, 2)]),
    "three inputs": (lambda x, y, z: (x.sum() + y.sum() * z.sum()), [(2,), (3,), (1, 4)]),
}


def _blocks(result):
    """The tensors of a (nested) transform result."""
    if isinstance(result, engine.Tensor):
        return [result]
    return [t for part in result for t in _blocks(part)]


def _arguments(shapes, dtype=engine.float64):
    tensors = [engine.randn(*shape, dtype=dtype) for shape in shapes]
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


@pytest.mark.parametrize("name", list(CASES))
def test_jacobian_elements_is_the_size_of_the_result(name):
    fn, shapes = CASES[name]
    inputs = _arguments(shapes)
    outputs = fn(*inputs) if isinstance(inputs, tuple) else fn(inputs)
    output_shapes = [tuple(o.shape) for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
    actual = sum(t.numel() for t in _blocks(F.jacobian(fn, inputs)))
    assert F.jacobian_elements(output_shapes, shapes) == actual


@pytest.mark.parametrize("name", ["scalar output", "three inputs"])
def test_hessian_elements_is_the_size_of_the_result(name):
    fn, shapes = CASES[name]
    inputs = _arguments(shapes)
    assert F.hessian_elements(shapes) == sum(t.numel() for t in _blocks(F.hessian(fn, inputs)))


@pytest.mark.parametrize("name", list(CASES))
def test_the_sizes_agree_with_pytorch(name):
    torch = pytest.importorskip("torch")
    fn, shapes = CASES[name]

    def torch_fn(*xs):  # the same function on torch tensors
        return fn(*xs) if name not in ("matrix output",) else torch.outer(*xs, *xs)

    inputs = tuple(torch.randn(*shape, dtype=torch.float64) for shape in shapes)
    outputs = torch_fn(*inputs)
    output_shapes = [tuple(o.shape) for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
    result = torch.autograd.functional.jacobian(torch_fn, inputs if len(inputs) > 1 else inputs[0])
    flat = [result] if isinstance(result, torch.Tensor) else [
        t for part in result for t in ([part] if isinstance(part, torch.Tensor) else part)]
    assert F.jacobian_elements(output_shapes, shapes) == sum(t.numel() for t in flat)


# ---- refused before any pass ---------------------------------------------------------------


class CountingCalls:
    """``fn`` that counts how often the transform runs it."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


def test_a_hessian_over_the_tensor_limit_is_refused_before_the_function_runs():
    fn = CountingCalls(lambda x: x.sin().sum())
    with enforce(Budget(max_elements=10_000)), pytest.raises(BudgetExceeded) as raised:
        F.hessian(fn, engine.zeros(101))  # 10 201 numbers
    assert raised.value.kind == "elements" and "Hessian" in str(raised.value) and "(101, 101)" in str(raised.value)
    assert fn.calls == 0


@pytest.mark.parametrize("strategy", ["reverse-mode", "forward-mode", "auto"])
def test_a_jacobian_over_the_tensor_limit_is_refused_after_one_forward_pass(strategy):
    fn = CountingCalls(lambda x: x.sin())
    with enforce(Budget(max_elements=10_000)), pytest.raises(BudgetExceeded) as raised:
        F.jacobian(fn, engine.zeros(101), strategy=strategy)
    assert raised.value.kind == "elements" and "Jacobian" in str(raised.value)
    assert fn.calls == 1  # the forward pass that gives the output's shape, no batched pass


def test_without_a_budget_nothing_is_checked():
    assert F.hessian(lambda x: x.sin().sum(), engine.zeros(101)).shape == (101, 101)


# ---- batched passes sized to the live-element budget ---------------------------------------

BIG = engine.ones(4000, dtype=engine.float64)


def wide(x):  # 40 inputs, 40 outputs, intermediates of 40 x 4000
    return (engine.outer(x, BIG).sin() * 2).sum(1)


def wide_scalar(x):
    return (engine.outer(x, BIG).sin() * x.sum()).sum()


TRANSFORMS = {
    "jacobian, reverse mode": lambda x: F.jacobian(wide, x, strategy="reverse-mode"),
    "jacobian, forward mode": lambda x: F.jacobian(wide, x, strategy="forward-mode"),
    "hessian": lambda x: F.hessian(wide_scalar, x),
    "hessian, reverse mode": lambda x: F.hessian(wide_scalar, x, outer_jacobian_strategy="reverse-mode"),
}


def _peak_bytes(work):
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_a_small_live_budget_gives_the_same_result_in_smaller_passes(name):
    x = engine.linspace(-1.0, 1.0, 40, dtype=engine.float64)
    expected, unbounded_peak = _peak_bytes(lambda: TRANSFORMS[name](x))
    live = 2_000_000  # elements: a pass of all 40 rows would hold several times that
    with enforce(Budget(max_live_elements=live, max_elements=10**8)):
        result, bounded_peak = _peak_bytes(lambda: TRANSFORMS[name](x))
    np.testing.assert_allclose(result.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
    assert bounded_peak < unbounded_peak / 2
    assert bounded_peak < 2 * live * 8  # float64: the pass, plus the forward graph it runs through


def test_an_explicit_chunk_size_is_lowered_to_fit_and_never_raised():
    x = engine.linspace(-1.0, 1.0, 40, dtype=engine.float64)
    expected = F.jacobian(wide, x, strategy="reverse-mode")
    with enforce(Budget(max_live_elements=2_000_000, max_elements=10**8)):
        result, peak = _peak_bytes(lambda: F.jacobian(wide, x, strategy="reverse-mode", chunk_size=40))
        small = F.jacobian(wide, x, strategy="reverse-mode", chunk_size=3)
    np.testing.assert_allclose(result.numpy(), expected.numpy(), rtol=1e-12)
    np.testing.assert_allclose(small.numpy(), expected.numpy(), rtol=1e-12)
    assert peak < 2 * 2_000_000 * 8


def test_pass_elements_bounds_what_one_row_of_a_pass_allocates():
    x = engine.linspace(-1.0, 1.0, 40, dtype=engine.float64).requires_grad_()
    outputs = (wide(x),)
    estimate = F.pass_elements(outputs)
    # One reverse row at a time: tracemalloc's peak over a single-row pass, in elements.
    seed = engine.zeros(1, 40, dtype=engine.float64)
    seed[0, 0] = 1
    _, peak = _peak_bytes(lambda: engine.autograd.grad(outputs[0], x, seed, retain_graph=True,
                                                       is_grads_batched=True))
    assert peak / 8 <= estimate


# ---- the deadline between passes -------------------------------------------------------------


@pytest.mark.parametrize("transform", [
    lambda x: F.jacobian(lambda t: t, x, strategy="reverse-mode", chunk_size=1),
    lambda x: F.jacobian(lambda t: t, x, strategy="forward-mode", chunk_size=1),
])
def test_the_deadline_is_checked_between_passes(transform):
    """The identity runs no table op, so only the check between passes can see the deadline."""
    x = engine.zeros(50)
    assert transform(x) is not None  # fine without a budget
    with enforce(Budget(deadline_s=1e-9)), pytest.raises(BudgetExceeded) as raised:
        transform(x)
    assert raised.value.kind == "deadline"


# ---- gradcheck -------------------------------------------------------------------------------


def test_gradcheck_refuses_jacobians_over_the_limits_before_allocating():
    x = engine.zeros(200, dtype=engine.float64, requires_grad=True)
    with enforce(Budget(max_elements=10_000)), pytest.raises(BudgetExceeded) as raised:
        checker.numerical_jacobian(lambda t: t.sin(), (x,))
    assert raised.value.kind == "elements" and "gradcheck" in str(raised.value)
    with enforce(Budget(max_live_elements=50_000)), pytest.raises(BudgetExceeded) as raised:  # 2 x 40 000
        checker.numerical_jacobian(lambda t: t.sin(), (x,))
    assert raised.value.kind == "elements"


def test_gradcheck_checks_the_deadline_per_row():
    x = engine.zeros(3, dtype=engine.float64, requires_grad=True)
    outputs = [x * 1.0]  # outside the budget: only the analytical rows run under it
    with enforce(Budget(deadline_s=1e-9)), pytest.raises(BudgetExceeded) as raised:
        checker.analytical_jacobian(outputs, (x,))
    assert raised.value.kind == "deadline"


# ---- the profiler ----------------------------------------------------------------------------


def test_the_profiler_refuses_events_past_max_events():
    x = engine.ones(3, requires_grad=True)
    with pytest.raises(BudgetExceeded) as raised, profile(max_events=50):
        for _ in range(100):
            x = x * 1.0
    assert raised.value.kind == "events" and raised.value.limit == 50
    with profile(max_events=50) as prof:  # backward nodes count too
        y = (engine.ones(3, requires_grad=True) * 2).sum()
        y.backward()
    assert len(prof.events()) <= 50
    with pytest.raises(BudgetExceeded), profile(max_events=3):
        (engine.ones(3, requires_grad=True) * 2).sin().sum().backward()
