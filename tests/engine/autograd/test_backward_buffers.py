"""The gradient buffers of a backward pass (engine/autograd/backward.py): what the pass adds into
in place, what it hands to a leaf's ``.grad`` without a copy, and what it frees early.

The pass writes only into arrays nothing else can hold. Each case below gives someone else a
reference to a gradient (the caller's ``gradient``, a hook's argument, an earlier ``.grad``,
``autograd.grad``'s results, two leaves fed the same array) and checks that they see exactly what
PyTorch shows them: unchanged, or accumulated in place where PyTorch accumulates in place. Sizes
run on both sides of ``backward.SOLE_MIN_BYTES``, below which nothing is tracked; gradients are
checked against PyTorch and against float64 central differences.
"""

from __future__ import annotations

import gc
import importlib
import weakref

import numpy as np
import pytest

import engine
from engine.op import Op
from tests.finite_differences import directional_derivative

backward_module = importlib.import_module("engine.autograd.backward")  # (engine.autograd.backward is the function)

SMALL, LARGE = 3, 40_000  # float32 40 000 elements: 160 KB, well above SOLE_MIN_BYTES
SIZES = pytest.mark.parametrize("n", [SMALL, LARGE])


def test_large_case_is_above_the_tracking_threshold():
    assert LARGE * 4 >= backward_module.SOLE_MIN_BYTES > SMALL * 8


def _values(n, seed=0, low=0.5, high=1.5):
    return np.random.default_rng(seed).uniform(low, high, n)


def _numpy(t):
    return None if t is None else t.detach().numpy().astype(np.float64)


def _same_as_torch(scenario, torch, n, rtol=1e-5):
    """Run ``scenario(lib, n)`` on the engine and on PyTorch; every array it returns must agree."""
    ours, theirs = scenario(engine, n), scenario(torch, n)
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if isinstance(b, bool):
            assert a == b, f"result {i}: {a} != PyTorch's {b}"
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-6, err_msg=f"result {i}")


# ---- someone else holds the gradient -------------------------------------------------------


def _caller_gradient_passed_through(lib, n):
    # add hands g on unchanged: the caller's gradient itself reaches x's AccumulateGrad
    x = lib.tensor(_values(n), requires_grad=True)
    v = lib.tensor(_values(n, seed=1))
    (x + 1).backward(v)
    first = _numpy(x.grad)
    v.mul_(3)  # the caller reuses their gradient buffer: x.grad must not follow
    after_write = _numpy(x.grad)
    (x + 1).backward(v)  # accumulates into x.grad: v must not follow
    return first, after_write, _numpy(v), _numpy(x.grad)


def _hook_keeps_its_argument(lib, n):
    w = lib.tensor(_values(n), requires_grad=True)
    kept = []
    w.register_hook(kept.append)
    (w * w).sum().backward()
    (w * w).sum().backward()
    return _numpy(kept[0]), _numpy(kept[1]), _numpy(w.grad)


def _grad_held_across_backward_calls(lib, n):
    z = lib.tensor(_values(n), requires_grad=True)
    (z * z.sin()).sum().backward()
    held = z.grad
    (z * z.sin()).sum().backward()  # PyTorch accumulates into the same tensor, in place
    return _numpy(held), _numpy(z.grad), held is z.grad


def _two_leaves_fed_one_array(lib, n):
    # (a + b)'s incoming gradient is fresh (from the product), and add passes it to both leaves
    a, b = (lib.tensor(_values(n, seed=s), requires_grad=True) for s in (0, 1))
    c = lib.tensor(_values(n, seed=2))
    ((a + b) * c).sum().backward()
    a.grad.add_(1)
    return _numpy(a.grad), _numpy(b.grad)


def _non_leaf_hook_keeps_a_gradient_passed_on(lib, n):
    # u's gradient, seen by the hook, goes on unchanged to t, which then gets another gradient
    # (recorded earlier, so it runs later): that one must not be added into what the hook kept
    x = lib.tensor(_values(n), requires_grad=True)
    t = x.exp()
    side = (t * t).sum()
    u = t + 1
    kept = []
    u.register_hook(kept.append)
    ((u * 3).sum() + side).backward()
    return _numpy(kept[0]), _numpy(x.grad)


def _retained_grad_of_a_node_fed_twice(lib, n):
    x = lib.tensor(_values(n), requires_grad=True)
    t = x.sin()
    t.retain_grad()
    (t * t + t * 2).sum().backward()
    held = t.grad
    return _numpy(held), _numpy(x.grad)


def _grad_results_with_a_target_on_the_path(lib, n):
    # autograd.grad captures t's gradient and carries it on to x, which an earlier path feeds later
    x = lib.tensor(_values(n), requires_grad=True)
    side = (x * x.cos()).sum()
    t = x + 1
    out = (t * t).sum() + side
    gt, gx = lib.autograd.grad(out, [t, x])
    return _numpy(gt), _numpy(gx), x.grad is None


def _two_roots_on_one_node(lib, n):
    x = lib.tensor(_values(n), requires_grad=True)
    y = x * 2
    v1, v2 = lib.tensor(_values(n, seed=1)), lib.tensor(_values(n, seed=2))
    lib.autograd.backward([y, y], [v1, v2])
    return _numpy(v1), _numpy(v2), _numpy(x.grad)


def _backward_with_inputs(lib, n):
    x = lib.tensor(_values(n), requires_grad=True)
    y = lib.tensor(_values(n, seed=1), requires_grad=True)
    (x * y + x.exp()).sum().backward(inputs=[x])
    held = x.grad
    (x * y + x.exp()).sum().backward(inputs=[x])
    return _numpy(held), y.grad is None


def _rule_returning_a_saved_input(lib, n):
    """An op whose vjp hands back a saved input as it is; the leaf must get a copy."""
    x = lib.tensor(_values(n), requires_grad=True)
    y = lib.tensor(_values(n, seed=1))
    if lib is engine:
        (_TIMES(x, y)).sum().backward()  # d sum(x * y) / dx = y, the rule's very argument
    else:
        (x * y).sum().backward()
    x.grad.add_(1)
    return _numpy(y), _numpy(x.grad)


# x * y, whose rule for x returns y itself: right only where g is all ones (a sum's gradient).
_TIMES = Op("times", lambda xp, x, y: x * y, (lambda y: y, None), grad_fn="MulBackward0")


SCENARIOS = [
    _caller_gradient_passed_through,
    _hook_keeps_its_argument,
    _grad_held_across_backward_calls,
    _two_leaves_fed_one_array,
    _non_leaf_hook_keeps_a_gradient_passed_on,
    _retained_grad_of_a_node_fed_twice,
    _grad_results_with_a_target_on_the_path,
    _two_roots_on_one_node,
    _backward_with_inputs,
    _rule_returning_a_saved_input,
]


@SIZES
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__.strip("_"))
def test_what_others_hold_matches_pytorch(scenario, n, torch):
    _same_as_torch(scenario, torch, n)


@SIZES
def test_the_callers_gradient_is_never_written(n):
    """Without PyTorch: the same aliasing check against values computed by hand."""
    first, after_write, v, grad = _caller_gradient_passed_through(engine, n)
    original = _values(n, seed=1)
    np.testing.assert_array_equal(first, original)  # d(x + 1)/dx = 1: the gradient is v itself
    np.testing.assert_array_equal(after_write, original)
    np.testing.assert_array_equal(v, original * 3)
    np.testing.assert_allclose(grad, original * 4, rtol=1e-6)


@SIZES
def test_a_hooks_argument_is_never_written(n):
    w = _values(n)
    first, second, grad = _hook_keeps_its_argument(engine, n)
    np.testing.assert_allclose(first, 2 * w, rtol=1e-6)
    np.testing.assert_allclose(second, 2 * w, rtol=1e-6)
    np.testing.assert_allclose(grad, 4 * w, rtol=1e-6)


@SIZES
def test_a_held_grad_is_accumulated_in_place(n):
    z = _values(n)
    held, grad, same = _grad_held_across_backward_calls(engine, n)
    assert same
    np.testing.assert_allclose(held, 2 * (np.sin(z) + z * np.cos(z)), rtol=1e-5)
    np.testing.assert_allclose(grad, held)


@SIZES
def test_two_leaves_fed_one_array_do_not_alias(n):
    c = _values(n, seed=2)
    a_grad, b_grad = _two_leaves_fed_one_array(engine, n)
    np.testing.assert_allclose(a_grad, c + 1, rtol=1e-6)
    np.testing.assert_allclose(b_grad, c, rtol=1e-6)


# ---- gradients of nodes fed many times, in place ------------------------------------------


def _many_uses(xp_or_lib, x, m):
    """x feeds seven edges, two of them broadcast (m is (4, n))."""
    sin, exp = (np.sin, np.exp) if xp_or_lib is np else (xp_or_lib.sin, xp_or_lib.exp)
    y = x * sin(x) + exp(x) * 2 + x + x * x
    return (y * y).sum() + (m * x).sum() + (m * sin(x)).sum() + (x / 3).sum()


@SIZES
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_node_fed_many_times_gets_the_sum(n, dtype):
    values, m = _values(n), _values(4 * n, seed=3).reshape(4, n)
    x = engine.tensor(values, dtype=getattr(engine, dtype), requires_grad=True)
    _many_uses(engine, x, engine.tensor(m, dtype=getattr(engine, dtype))).backward()
    u = np.random.default_rng(4).standard_normal(n)
    along_u = directional_derivative(lambda xs: _many_uses(np, xs[0], m), [values], [u])
    rtol = 1e-4 if dtype == "float32" else 1e-8
    np.testing.assert_allclose(float(x.grad.numpy().astype(np.float64) @ u), along_u, rtol=rtol)


@SIZES
def test_a_node_fed_many_times_matches_pytorch(n, torch):
    def scenario(lib, n):
        x = lib.tensor(_values(n), requires_grad=True)
        m = lib.tensor(_values(4 * n, seed=3).reshape(4, n))
        _many_uses(lib, x, m).backward()
        held = x.grad
        _many_uses(lib, x, m).backward()
        return _numpy(held), _numpy(x.grad)

    _same_as_torch(scenario, torch, n, rtol=1e-4)


@SIZES
def test_retain_graph_runs_the_same_pass_again(n, torch):
    def scenario(lib, n):
        x = lib.tensor(_values(n), requires_grad=True)
        out = _many_uses(lib, x, lib.tensor(_values(4 * n, seed=3).reshape(4, n)))
        out.backward(retain_graph=True)
        first = _numpy(x.grad)
        out.backward(retain_graph=True)
        out.backward()
        return first, _numpy(x.grad)

    _same_as_torch(scenario, torch, n, rtol=1e-4)


@SIZES
def test_double_backward_through_nodes_fed_many_times(n, torch):
    def scenario(lib, n):
        x = lib.tensor(_values(n), requires_grad=True)
        out = _many_uses(lib, x, lib.tensor(_values(4 * n, seed=3).reshape(4, n)))
        (g,) = lib.autograd.grad(out, x, create_graph=True)
        (g * g.sin()).sum().backward()
        return _numpy(g), _numpy(x.grad)

    _same_as_torch(scenario, torch, n, rtol=1e-4)


@SIZES
def test_mixed_dtypes_reach_the_leaf_in_its_dtype(n, torch):
    def scenario(lib, n):
        x = lib.tensor(_values(n), dtype=lib.float32, requires_grad=True)
        y = lib.tensor(_values(n, seed=1), dtype=lib.float64)
        (x * y + x.sin() * y).sum().backward()
        return _numpy(x.grad), str(x.grad.dtype) == "torch.float32" or x.grad.dtype == engine.float32

    _same_as_torch(scenario, torch, n)


# ---- freeing ------------------------------------------------------------------------------


@SIZES
def test_saved_intermediates_are_freed_by_backward(n):
    x = engine.tensor(_values(n), requires_grad=True)
    s = x.sin()
    saved = weakref.ref(s)
    out = (x * s).sum()
    del s
    gc.collect()
    assert saved() is not None  # the product's node holds it for backward
    out.backward()
    gc.collect()
    assert saved() is None
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.backward()


@SIZES
def test_retain_graph_keeps_saved_intermediates(n):
    x = engine.tensor(_values(n), requires_grad=True)
    s = x.sin()
    saved = weakref.ref(s)
    out = (x * s).sum()
    del s
    out.backward(retain_graph=True)
    gc.collect()
    assert saved() is not None
    out.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * (np.sin(_values(n)) + _values(n) * np.cos(_values(n))),
                               rtol=1e-5)
