"""Plans on arrays (engine.compiler.plan): replay, guards, buffer lifetimes, view elision."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import backend
from engine.compiler.plan import GuardFailedError


def _plan(fn, *args):
    compiled = engine.compile(fn)
    compiled(*args)
    (plan,) = compiled.plans(*args)
    return plan


def test_replay_is_bit_for_bit_the_eager_forward():
    def fn(x, y):
        return (x.exp() * y - x / (y * y + 1.0)).tanh().sum(dim=0)

    rng = np.random.default_rng(0)
    x, y = (engine.tensor(rng.standard_normal((3, 4)), dtype=engine.float32) for _ in range(2))
    plan = _plan(fn, x, y)
    for _ in range(3):
        x, y = (engine.tensor(rng.standard_normal((3, 4)), dtype=engine.float32) for _ in range(2))
        env = plan.replay([x._data, y._data])
        np.testing.assert_array_equal(backend.to_numpy(env[plan.output_slots[0]]), fn(x, y).numpy())


def test_a_guard_that_sees_another_value_stops_the_replay():
    def fn(x):
        return x * 2 if x.sum() > 0 else x * 3

    plan = _plan(fn, engine.tensor([1.0]))
    assert backend.to_numpy(plan.replay([engine.tensor([5.0])._data])[plan.output_slots[0]]).tolist() == [10.0]
    with pytest.raises(GuardFailedError, match="item"):
        plan.replay([engine.tensor([-1.0])._data])


def test_a_broadcast_view_read_by_elementwise_ops_only_is_elided():
    x = engine.ones(6, requires_grad=True)
    plan = _plan(lambda t: (t * t.sin()).sum(), x)
    backward_ops = [s.op.name for s in plan.backward_plans[0].steps.records]
    assert "expand" not in backward_ops  # the sum's vjp broadcasts g; mul broadcasts by itself
    plan_with_scalar = _plan(lambda t: (t * 2).sum(), x)
    # here the expanded g meets only a number, and that product is the gradient: the view gives
    # the gradient its shape, and stays
    assert "expand" in [s.op.name for s in plan_with_scalar.backward_plans[0].steps.records]


def test_a_smaller_product_passes_on_until_it_meets_a_full_sized_operand():
    # sum(2 sin x): g (one element) * 2 is computed on one element, then meets cos x; the gradient
    # is the eager one bit for bit
    x = engine.tensor(np.linspace(-2.0, 2.0, 7), dtype=engine.float32, requires_grad=True)
    compiled = engine.compile(lambda t: (2 * t.sin() + 1).sum())
    compiled(x)
    (plan,) = compiled.plans(x)
    backward = plan.backward_plans[0]
    assert "expand" not in [s.op.name for s in backward.steps.records]
    g = backend.namespace_of(x._data).asarray(3.0, dtype=x._data.dtype)  # on x's device
    env = plan.replay([x._data])
    (grad,) = backward.run(env, g)
    grad = backend.to_numpy(grad)
    eager = engine.tensor(x.detach().numpy(), requires_grad=True)
    (2 * eager.sin() + 1).sum().backward(engine.tensor(3.0))
    assert grad.shape == (7,)
    np.testing.assert_array_equal(grad, eager.grad.numpy())
    np.testing.assert_allclose(grad, 6 * np.cos(np.linspace(-2.0, 2.0, 7)), rtol=1e-6)


def test_small_plans_keep_buffers_and_large_ones_free_them():
    small = _plan(lambda t: (t.sin() * 2).cos(), engine.ones(10))
    env = small.replay([engine.ones(10)._data])
    assert not small.free and all(v is not None for v in env)
    large = _plan(lambda t: (t.sin() * 2).cos(), engine.ones(1 << 16))
    env = large.replay([engine.ones(1 << 16)._data])
    assert large.free
    assert [i for i, v in enumerate(env) if v is not None and getattr(v, "ndim", 0)] == large.output_slots


def test_cost_counts_the_steps_and_the_live_buffers():
    plan = _plan(lambda t: (t.sin() * 2).cos(), engine.ones(1 << 16))
    cost = plan.cost()
    assert cost["steps"] == 3
    assert cost["max_buffer_elements"] == 1 << 16
    assert cost["total_elements"] == 4 * (1 << 16)  # the argument and three results (2 is a number)
    # two buffers at once at most (each dropped after its last use; the argument's slot too), and the 2
    assert cost["peak_live_elements"] == 2 * (1 << 16) + 1


def test_run_on_tensors_rebuilds_a_differentiable_graph():
    x = engine.tensor([0.5, 1.5], dtype=engine.float64, requires_grad=True)
    plan = _plan(lambda t: (t * t).sum(), x)
    env = plan.run_on_tensors([x], [])
    out = env[plan.output_slots[0]]
    (g,) = engine.autograd.grad(out, x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), [1.0, 3.0])
