"""The budget's deadline holds inside backward passes, which run no table op unless they build a graph."""

from __future__ import annotations

import importlib

import pytest

import engine
from frontends.budget import Budget, BudgetExceeded, enforce

backward_module = importlib.import_module("engine.autograd.backward")
gradcheck_module = importlib.import_module("engine.autograd.gradcheck")


def test_a_backward_pass_stops_at_the_deadline():
    x = engine.ones(50, requires_grad=True)
    y = (x * 2).sin()  # recorded outside the budget: only the backward runs under it
    seeds = engine.eye(50)
    assert engine.autograd.grad(y, x, seeds, retain_graph=True, is_grads_batched=True)[0].shape == (50, 50)
    with enforce(Budget(deadline_s=1e-9)), pytest.raises(BudgetExceeded) as raised:
        engine.autograd.grad(y, x, seeds, retain_graph=True, is_grads_batched=True)
    assert raised.value.kind == "deadline"


def test_gradchecks_analytical_rows_stop_at_the_deadline():
    x = engine.zeros(3, dtype=engine.float64, requires_grad=True)
    outputs = [x * 1.0]
    with enforce(Budget(deadline_s=1e-9)), pytest.raises(BudgetExceeded) as raised:
        gradcheck_module.analytical_jacobian(outputs, (x,))
    assert raised.value.kind == "deadline"


def test_no_budget_no_backward_observer():
    with enforce(Budget()):
        pass
    assert all(type(o).__module__ != "frontends.budget" for o in backward_module.node_observers)
    x = engine.ones(3, requires_grad=True)
    (x * 2).sum().backward()  # runs with nothing observing it
    assert x.grad.tolist() == [2.0, 2.0, 2.0]
