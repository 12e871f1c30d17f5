"""Reverse mode (engine/autograd/backward.py): ``backward`` and ``grad`` and their options, hooks,
retain_grad, accumulation, higher-order derivatives, long graphs. Expected values are analytic
formulas or PyTorch's own behaviour."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

import engine
from engine.autograd import grad
from tests.engine.autograd.leaves import leaf

# ---- backward basics ----------------------------------------------------------------------


def test_scalar_backward_gives_analytic_gradient():
    x = leaf([0.5, -1.0, 2.0])
    (x * x.sin()).sum().backward()
    a = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), np.sin(a) + a * np.cos(a), rtol=1e-12)


def test_gradients_accumulate_across_backward_calls_and_reset_with_none():
    x = leaf([1.0, 2.0])
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3 + 2, 3 + 4])
    x.grad = None
    (x * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2, 2])


def test_leaf_grad_accumulates_in_place():
    x = leaf([1.0, 2.0])
    (x * 2).sum().backward()
    first = x.grad
    (x * 3).sum().backward()
    assert x.grad is first  # PyTorch accumulates into the existing tensor
    np.testing.assert_allclose(first.numpy(), [5.0, 5.0])


def test_non_scalar_backward_needs_gradient():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        (x * 2).backward()


def test_non_scalar_backward_with_gradient_is_vjp():
    x = leaf([1.0, 2.0, 3.0])
    y = x * x
    y.backward(engine.tensor([1.0, 0.1, 0.01], dtype=engine.float64))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 0.4, 0.06])


def test_gradient_of_wrong_shape_is_rejected():
    x = leaf([1.0, 2.0, 3.0])
    with pytest.raises(RuntimeError, match=r"Mismatch in shape.*\(2,\).*\(3,\)"):
        (x * 2).backward(engine.ones(2, dtype=engine.float64))


def test_second_backward_through_freed_graph_tells_about_retain_graph():
    x = leaf([1.0, 2.0])
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = leaf([1.0, 2.0])
    y = (x.exp()).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([1.0, 2.0]))


def test_backward_on_tensor_without_grad_raises():
    x = engine.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        x.sum().backward()


def test_leaf_grad_only_and_non_leaf_grad_warns():
    x = leaf([1.0, 2.0])
    y = x * 2
    y.sum().backward()
    assert x.is_leaf and not y.is_leaf
    with pytest.warns(UserWarning, match="retain_grad"):
        assert y.grad is None


def test_retain_grad_populates_non_leaf_grad():
    x = leaf([1.0, 2.0])
    y = x * 3
    y.retain_grad()
    assert y.retains_grad
    (y * y).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(y.grad.numpy(), [6.0, 12.0])
    np.testing.assert_allclose(x.grad.numpy(), [18.0, 36.0])


def test_retain_grad_on_constant_raises():
    with pytest.raises(RuntimeError, match="requires_grad=False"):
        engine.tensor([1.0]).retain_grad()


def test_shared_subexpression_gradients_add():
    x = leaf([0.3, 0.7])
    y = x.sin()
    (y * y + y).sum().backward()
    a = np.array([0.3, 0.7])
    np.testing.assert_allclose(x.grad.numpy(), (2 * np.sin(a) + 1) * np.cos(a), rtol=1e-12)


def test_add_of_same_tensor_twice():
    x = leaf([1.0, 2.0])
    (x + x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_two_leaves_receiving_the_same_gradient_do_not_alias():
    x, y = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (x + y).sum().backward()
    x.grad.add_(1.0)
    np.testing.assert_allclose(y.grad.numpy(), [1.0, 1.0])


def test_float32_leaf_gets_float32_grad():
    x = engine.tensor([1.0, 2.0], requires_grad=True)
    (x.double() * 3).sum().backward()
    assert x.grad.dtype == engine.float32
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_autograd_backward_with_several_roots():
    x = leaf([1.0, 2.0])
    y1, y2 = (x * 2).sum(), x * x
    engine.autograd.backward([y1, y2], [None, engine.ones(2, dtype=engine.float64)])
    np.testing.assert_allclose(x.grad.numpy(), [2 + 2, 2 + 4])


# ---- hooks --------------------------------------------------------------------------------


def test_leaf_hook_sees_and_replaces_gradient():
    x = leaf([1.0, 2.0])
    seen = []

    def hook(g):
        seen.append(g.detach().numpy().copy())
        return g * 10

    x.register_hook(hook)
    (x * 2).sum().backward()
    np.testing.assert_allclose(seen[0], [2.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), [20.0, 20.0])


def test_one_node_on_leaves_runs_their_hooks_in_the_general_order():
    # (a * b).backward(g) is one node whose inputs are leaves, which backward runs without its
    # heap; the leaves' hooks must still run from the highest sequence number down, as they do
    # below a second node. b's accumulator is made first, so b's hook runs first in both.
    def hooks_order(extra_node):
        a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
        (b * 1).sum().backward()
        order = []
        a.register_hook(lambda g: order.append("a"))
        b.register_hook(lambda g: order.append("b"))
        out = a * b
        if extra_node:
            out = out * 1
        out.backward(engine.ones(2))
        np.testing.assert_allclose(a.grad.numpy(), [3.0, 4.0])
        return order

    assert hooks_order(extra_node=False) == hooks_order(extra_node=True) == ["b", "a"]


def test_one_node_on_leaves_frees_its_graph_and_checks_versions():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    out = a * b
    out.backward(engine.ones(2))
    with pytest.raises(RuntimeError, match="retain_graph"):
        out.backward(engine.ones(2))
    out = a * b
    with engine.no_grad():
        a.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward(engine.ones(2))
    np.testing.assert_allclose(b.grad.numpy(), [1.0, 2.0])  # from the first pass only


def test_non_leaf_hook_changes_upstream_gradient_and_can_be_removed():
    x = leaf([1.0, 2.0])
    y = x * 2
    handle = y.register_hook(lambda g: g * 0 + 1)
    (y * y).sum().backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])  # dL/dy replaced by 1, times dy/dx = 2
    handle.remove()
    x.grad = None
    (y * y).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [8.0, 16.0])


def test_hook_returning_none_keeps_gradient():
    x = leaf([1.0])
    calls = []
    x.register_hook(lambda g: calls.append(1))
    (x * 5).sum().backward()
    assert calls == [1]
    np.testing.assert_allclose(x.grad.numpy(), [5.0])


def test_hook_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        engine.tensor([1.0]).register_hook(lambda g: g)


def test_hooks_apply_with_create_graph():
    x = leaf([1.0, 3.0])
    x.register_hook(lambda g: g * 2)
    (x**2).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    np.testing.assert_allclose(x.grad.detach().numpy(), [4.0, 12.0])


# ---- grad(): grad_outputs, inputs, allow_unused, batched ----------------------------------


def test_grad_returns_without_accumulating():
    x = leaf([1.0, 2.0])
    (g,) = grad((x**2).sum(), x)
    np.testing.assert_allclose(g.numpy(), [2.0, 4.0])
    assert x.grad is None


def test_grad_with_grad_outputs_and_several_outputs():
    x = leaf([1.0, 2.0])
    y1, y2 = x * 3, x * x
    gx = grad([y1, y2], [x], grad_outputs=[engine.ones(2, dtype=engine.float64),
                                             engine.tensor([1.0, -1.0], dtype=engine.float64)])[0]
    np.testing.assert_allclose(gx.numpy(), [3 + 2, 3 - 4])


def test_allow_unused():
    x, z = leaf([1.0]), leaf([2.0])
    y = (x * 2).sum()
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        grad(y, [x, z], retain_graph=True)
    gx, gz = grad(y, [x, z], allow_unused=True, retain_graph=True)
    assert gz is None and gx.item() == 2.0
    gx, gz = grad(y, [x, z], materialize_grads=True)
    assert gz.tolist() == [0.0]


def test_a_leaf_among_the_outputs_of_grad_is_left_alone():
    # the leaf x is itself an output (its AccumulateGrad a root) but not an input: nothing flows to it
    x, y = leaf([1.0, 2.0]), leaf([3.0])
    (gy,) = grad([x, (y * y).sum()], [y], grad_outputs=[engine.ones(2, dtype=engine.float64), None])
    np.testing.assert_allclose(gy.numpy(), [6.0])
    assert x.grad is None and y.grad is None


def test_grad_wrt_non_leaf():
    x = leaf([1.0, 2.0])
    h = x * 3
    y = (h * h).sum()
    (gh,) = grad(y, h)
    np.testing.assert_allclose(gh.numpy(), [6.0, 12.0])


def test_grad_wrt_tensor_without_grad_raises():
    x = leaf([1.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        grad((x * 2).sum(), engine.tensor([1.0]))


def test_backward_inputs_restricts_accumulation():
    x, z = leaf([1.0]), leaf([2.0])
    (x * z).sum().backward(inputs=[x])
    assert x.grad.item() == 2.0 and z.grad is None
    with pytest.raises(RuntimeError, match="cannot be empty"):
        (x * z).sum().backward(inputs=[])


def test_backward_inputs_non_leaf_gets_grad():
    x = leaf([1.0, 2.0])
    h = x * 2
    (h * h).sum().backward(inputs=[h])
    np.testing.assert_allclose(h.grad.numpy(), [4.0, 8.0])
    assert x.grad is None


def test_is_grads_batched_equals_loop():
    x = leaf([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    y = x.sin() @ engine.tensor([[1.0], [2.0], [3.0]], dtype=engine.float64)
    vs = engine.randn(4, 2, 1, dtype=engine.float64)
    (batched,) = grad(y, x, vs, retain_graph=True, is_grads_batched=True)
    loop = np.stack([grad(y, x, v, retain_graph=True)[0].numpy() for v in vs])
    np.testing.assert_allclose(batched.numpy(), loop, rtol=1e-12)


# ---- higher order -------------------------------------------------------------------------


def test_create_graph_gives_second_and_third_derivatives():
    x = leaf([0.5, -1.5])
    y = (x**3).sum()
    (g,) = grad(y, x, create_graph=True)
    assert g.requires_grad
    (g2,) = grad(g.sum(), x, create_graph=True)
    (g3,) = grad(g2.sum(), x)
    a = np.array([0.5, -1.5])
    np.testing.assert_allclose(g.detach().numpy(), 3 * a**2)
    np.testing.assert_allclose(g2.detach().numpy(), 6 * a)
    np.testing.assert_allclose(g3.numpy(), [6.0, 6.0])


def test_double_backward_through_backward_method():
    x = leaf([0.7])
    y = x.sin() * x
    (g,) = grad(y.sum(), x, create_graph=True)
    g.sum().backward()
    a = 0.7
    assert x.grad.item() == pytest.approx(2 * math.cos(a) - a * math.sin(a), rel=1e-12)


# ---- long graphs, and PyTorch's messages --------------------------------------------------


def test_100k_op_chain_backward_is_iterative():
    x = leaf([1.0])
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad.item() == 1.0
    del y  # tearing the chain down must not recurse either


@pytest.mark.torch
def test_messages_match_pytorch(torch):
    def messages(module):
        found = []
        x = module.ones(3, requires_grad=True)
        for action in (
            lambda: (x * 2).backward(),
            lambda: setattr(x * 2, "requires_grad", False),
        ):
            with pytest.raises(RuntimeError) as caught:
                action()
            found.append(str(caught.value))
        y = (x * x).sum()
        y.backward()
        with pytest.raises(RuntimeError) as caught:
            y.backward()
        found.append(str(caught.value))
        return found

    ours, theirs = messages(engine), messages(torch)
    for a, b in zip(ours, theirs):
        assert a == re.sub(r"torch\.", "engine.", b)
