"""Compiled equals eager for every op of the table, and for random compositions of ops.

Each op case of ``opcases`` is wrapped in a small function (the op, then a weighted sum, so
every output element reaches the gradient) and compiled. It is called on two sets of values
with one signature: the first call traces, the second replays. The replay's outputs are the
eager call's bit for bit (the same forward kernels run on the same arrays); its gradients
match eager autograd's to float rounding (the backward plan runs the same vjp rules, recorded
as ops). Random compositions (hypothesis) chain elementwise, broadcasting and reducing ops.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import ops
from engine.autograd import grad
from tests.engine.opcases import all_cases
from tests.engine.test_ops_table import tensors_of

RTOL, ATOL = 1e-5, 1e-6


def _as_function(case):
    op = ops.table[case.op]

    def fn(*args):
        if case.variadic:
            out = op(list(args), **case.params)
        else:
            out = op(*args, **case.params)
        if op.extra_outputs:
            out = out[0]
        if out.dtype == engine.bool or not out.is_floating_point():
            return out
        weights = engine.linspace(0.5, 1.5, out.numel(), dtype=out.dtype, device=out.device).reshape(out.shape)
        return (out * weights).sum()

    return fn


def _run(fn, case, seed):
    args, leaves = tensors_of(case, case.arrays(seed))
    flat = args[0] if case.variadic else args
    out = fn(*flat)
    grads = grad(out, leaves, allow_unused=True) if out.requires_grad else [None] * len(leaves)
    return out, grads


@pytest.mark.parametrize("case", all_cases(ops.table), ids=lambda c: c.id)
def test_compiled_op_equals_eager(case):
    fn = _as_function(case)
    compiled = engine.compile(fn)
    for seed in (0, 1):
        expected, expected_grads = _run(fn, case, seed)
        got, got_grads = _run(compiled, case, seed)
        np.testing.assert_array_equal(got.detach().numpy(), expected.detach().numpy(), err_msg=case.id)
        for g, e in zip(got_grads, expected_grads):
            assert (g is None) == (e is None), case.id
            if g is not None:
                np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=RTOL, atol=ATOL, err_msg=case.id)
    kinds = [record.kind for record in compiled.history]
    assert kinds[0] in ("recompiled", "eager"), compiled.explain()
    if kinds[0] == "recompiled":
        assert kinds[1] == "replayed", compiled.explain()


# ---- random compositions ---------------------------------------------------------------------

UNARY = ("sin", "cos", "tanh", "exp", "sigmoid", "relu", "neg", "abs")
BINARY = ("add", "sub", "mul", "div", "maximum")


def _composition(program):
    """A function of (x, y) applying ``program``: ("unary", name) | ("binary", name, operand)
    | ("scalar", name, value) | ("reduce", dim) steps, ending in a sum."""

    def fn(x, y):
        value = x
        for step in program:
            if step[0] == "unary":
                value = getattr(engine, step[1])(value)
            elif step[0] == "binary":
                other = y if step[2] == "y" else x
                if step[1] == "div":
                    other = other * other + 1.0
                value = getattr(engine, step[1])(value, other)
            elif step[0] == "scalar":
                value = value * step[2] if step[1] == "mul" else value + step[2]
            elif value.ndim > 0:
                value = value.sum(dim=step[1] % value.ndim, keepdim=True)
        return value.sum()

    return fn


programs = st.lists(
    st.one_of(
        st.tuples(st.just("unary"), st.sampled_from(UNARY)),
        st.tuples(st.just("binary"), st.sampled_from(BINARY), st.sampled_from(("x", "y"))),
        st.tuples(st.just("scalar"), st.sampled_from(("mul", "add")), st.floats(-2.0, 2.0)),
        st.tuples(st.just("reduce"), st.integers(0, 2)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs, broadcast=st.booleans())
def test_random_compositions_compiled_equal_eager(program, broadcast):
    fn = _composition(program)
    compiled = engine.compile(fn)
    rng = np.random.default_rng(len(program))
    for _ in range(3):
        x_data = rng.uniform(-1.0, 1.0, (2, 3))
        y_data = rng.uniform(-1.0, 1.0, (3,) if broadcast else (2, 3))
        results = []
        for f in (fn, compiled):
            x = engine.tensor(x_data, requires_grad=True)
            y = engine.tensor(y_data, requires_grad=True)
            out = f(x, y)
            results.append((out, grad(out, (x, y), allow_unused=True)))
        (expected, expected_grads), (got, got_grads) = results
        np.testing.assert_array_equal(got.detach().numpy(), expected.detach().numpy())
        for g, e in zip(got_grads, expected_grads):
            assert (g is None) == (e is None)
            if g is not None:
                np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=RTOL, atol=ATOL)
    assert [r.kind for r in compiled.history] == ["recompiled", "replayed", "replayed"], compiled.explain()
