"""Buffers large plans own (engine.compiler.buffers): ufunc steps into a pool, reused safely."""

from __future__ import annotations

import numpy as np

import engine
from engine import backend
from engine.compiler.buffers import single_ufunc


def _plan(fn, *args):
    compiled = engine.compile(fn)
    compiled(*args)
    (plan,) = compiled.plans(*args)
    return plan


def test_only_forwards_that_are_one_ufunc_call_qualify():
    x = engine.ones(10)
    plan = _plan(lambda t: (t.sin() * 2).sum().reshape(1), x)
    env = plan.replay([x._data])  # a small plan keeps every value
    found = {step.op.name: single_ufunc(step, env) is not None for step in plan.steps.records}
    # sum is a reduction and reshape no ufunc; sin and the product are one ufunc call each
    assert found == {"sin": True, "mul": True, "sum": False, "reshape": False}


def test_large_plans_write_one_ufunc_steps_into_pooled_buffers():
    def fn(t):
        return (((t * 2).sin() * 3).cos() + t).sum()

    x = engine.tensor(np.random.default_rng(0).standard_normal(1 << 16), dtype=engine.float32)
    plan = _plan(fn, x)
    assert plan.pool is not None
    # five elementwise results in a chain, each step writing over the input it reads last: one buffer
    assert len(plan.pool.specs) == 1
    expected = fn(x).numpy()
    for _ in range(3):  # the same buffers again and again; the result is the eager one, bit for bit
        env = plan.replay([x._data])
        np.testing.assert_array_equal(backend.to_numpy(env[plan.output_slots[0]]), expected)
    assert len(env) == plan.size  # the buffers went back to the pool


def test_pooled_buffers_never_hold_an_output_or_what_backward_reads():
    x = engine.tensor(np.linspace(-1.0, 1.0, 1 << 16), dtype=engine.float32, requires_grad=True)
    compiled = engine.compile(lambda t: (t.sin() * t).exp())
    outputs = [compiled(x) for _ in range(3)]  # each keeps its output and its saved values
    for out in outputs:
        out.sum().backward()
    expected = np.exp(np.sin(x.detach().numpy()) * x.detach().numpy())
    for out in outputs:
        np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-6)
    (plan,) = compiled.plans(x)
    pooled = {id(b) for b in plan.pool.sets[0]} if plan.pool else set()
    assert not any(id(out._data) in pooled for out in outputs)


def test_a_leaf_takes_the_backwards_fresh_gradient_and_never_a_pooled_buffer():
    # sum(x * sin x): the gradient is sin x + x cos x, computed by an add that allocates; .grad
    # takes that array as eager's does, while the backward's other results live in its pool.
    data = np.linspace(-3.0, 3.0, 1 << 16)
    x = engine.tensor(data, dtype=engine.float32, requires_grad=True)
    compiled = engine.compile(lambda t: (t * t.sin()).sum())
    grads = []
    for shift in (0.0, 0.5, 1.0):
        with engine.no_grad():
            x.copy_(engine.tensor(data + shift, dtype=engine.float32))
        x.grad = None
        compiled(x).backward()
        grads.append((shift, x.grad))
    (plan,) = compiled.plans(x)
    backward = plan.backward_plans[0]
    assert backward.pool is not None and backward.fresh_results == [True]
    for shift, grad in grads:  # each .grad is its own array, untouched by the later replays
        assert not backward.pool.holds(grad._data)
        shifted = data + shift
        np.testing.assert_allclose(grad.numpy(), np.sin(shifted) + shifted * np.cos(shifted), rtol=1e-5, atol=1e-5)
    held = x.grad
    compiled(x).backward()  # a held .grad accumulates in place
    assert x.grad is held
    shifted = data + 1.0
    np.testing.assert_allclose(held.numpy(), 2 * (np.sin(shifted) + shifted * np.cos(shifted)), rtol=1e-5, atol=1e-5)


def test_a_gradient_that_is_a_view_reaches_the_leaf_as_a_copy():
    # sum's gradient is g broadcast to x's shape: read-only, so .grad must be a copy it can write.
    x = engine.ones(1 << 16, requires_grad=True)
    compiled = engine.compile(lambda t: t.sum())
    for _ in range(2):
        x.grad = None
        compiled(x).backward()
        x.grad.add_(1)  # in place: fails on a broadcast view
        np.testing.assert_array_equal(x.grad.numpy(), np.full(1 << 16, 2.0, np.float32))


def test_a_gradient_written_over_a_dying_fresh_input_is_a_new_array_at_every_call():
    # the gradient of sum(x sin x) is (g sin x) + (g x cos x): the add writes over the second
    # term, which its step made fresh, so no pooled buffer is involved and .grad takes the array
    x = engine.tensor(np.linspace(-3.0, 3.0, 1 << 16), dtype=engine.float32, requires_grad=True)
    compiled = engine.compile(lambda t: (t * t.sin()).sum())
    compiled(x).backward()
    (plan,) = compiled.plans(x)
    backward = plan.backward_plans[0]
    (add,) = [s for s in backward.steps.records if s.out == backward.grad_slots[0]]
    assert add.out not in backward.steps.pooled_outputs
    first = x.grad
    x.grad = None
    compiled(x).backward()
    assert x.grad._data is not first._data and not np.shares_memory(x.grad._data, first._data)
    np.testing.assert_array_equal(x.grad.numpy(), first.numpy())
