"""The recorded graph (engine/autograd/graph.py) from a tensor's side: which tensors are leaves,
who may change ``requires_grad``, and ``detach``, which leaves the graph but keeps memory and version."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from tests.engine.autograd.leaves import leaf


def test_requires_grad_only_settable_on_leaves():
    x = leaf([1.0])
    y = x * 2
    with pytest.raises(RuntimeError, match="you can only change requires_grad flags of leaf variables"):
        y.requires_grad = False


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(RuntimeError, match="floating point"):
        engine.tensor([1, 2]).requires_grad_()


def test_detach_shares_memory_and_version_but_not_history():
    x = leaf([1.0, 2.0])
    y = x * 2
    d = y.detach()
    assert d.grad_fn is None and not d.requires_grad and d.is_leaf
    d[0] = 7.0  # in no graph: allowed, and visible through y
    assert y[0].item() == 7.0
    assert y._version == d._version == 1


def test_detach_in_place():
    x = leaf([1.0])
    y = x * 2
    assert y.detach_() is y
    assert y.grad_fn is None and not y.requires_grad


# ---- saved tensors by PyTorch's names, pack/unpack hooks, node hooks -------------------


def test_saved_tensors_carry_pytorchs_names():
    x, w = leaf([0.5, 1.5]), leaf([2.0, -1.0])
    product = x * w
    assert product.grad_fn._saved_self is x and product.grad_fn._saved_other is w
    power = x.pow(3)
    assert power.grad_fn._saved_self is x and power.grad_fn._saved_exponent == 3
    exp = x.exp()
    assert exp.grad_fn._saved_result is not exp  # a new Tensor on the same values, as PyTorch's
    np.testing.assert_array_equal(exp.grad_fn._saved_result.detach().numpy(), exp.detach().numpy())
    assert x.sum(0).grad_fn._saved_self_sym_sizes == (2,)
    with pytest.raises(AttributeError, match="_saved_other"):
        exp.grad_fn._saved_other
    exp.sum().backward()
    with pytest.raises(RuntimeError, match="after they have already been freed"):
        exp.grad_fn._saved_result


def test_every_saved_name_comes_from_the_table():
    """Each op's saved tensors are reachable under a PyTorch name (result, self, other, ...)."""
    from engine import ops
    from engine.autograd.graph import pytorch_name

    x, y = leaf([0.5, 1.5]), leaf([2.0, 3.0])
    for op in (ops.mul, ops.div, ops.exp, ops.sin, ops.tanh, ops.sigmoid, ops.log, ops.maximum):
        inputs = (x, y)[: op.arity]
        node = op(*inputs).grad_fn
        if op.saves_out:
            assert node._saved_result.shape == node.out_shape
        for kept, name, value in zip(op.keeps_input, op.input_names, inputs):
            if kept:
                assert getattr(node, "_saved_" + pytorch_name(name)) is value


def test_same_saved_names_as_pytorch(torch):
    for lib in (engine, torch):
        x = lib.tensor([0.5, 1.5], requires_grad=True)
        w = lib.tensor([2.0, -1.0], requires_grad=True)
        nodes = [(x * w).grad_fn, x.pow(3).grad_fn, x.exp().grad_fn, x.sin().grad_fn]
        found = [[n for n in ("_saved_self", "_saved_other", "_saved_result", "_saved_exponent") if hasattr(node, n)]
                 for node in nodes]
        if lib is engine:
            ours = found
    assert ours == found


def _raw_saved_hooks_run(lib):
    calls = []
    x = lib.tensor([1.0, -2.0], requires_grad=True)
    y = x.pow(2)
    y.grad_fn._raw_saved_self.register_hooks(
        lambda t: (calls.append("pack"), t * 2)[1], lambda t: (calls.append("unpack"), t)[1]
    )
    assert calls == ["pack"]
    y.sum().backward()
    return calls, x.grad.numpy().tolist()


def test_raw_saved_register_hooks_packs_now_and_unpacks_for_backward(torch):
    # 2 * (2 x): backward used the packed 2 x
    assert _raw_saved_hooks_run(engine) == _raw_saved_hooks_run(torch) == (["pack", "unpack"], [4.0, -8.0])


def test_saved_tensors_hooks_see_every_saved_tensor_and_backward_uses_the_unpacked():
    packed = []

    def pack(t):
        packed.append(tuple(t.shape))
        return t * 1

    with engine.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        x, w = leaf([0.5, 1.5, -2.0]), leaf([1.0, 2.0, 3.0])
        z = (x * w).sin().sum()
    assert packed == [(3,), (3,), (3,)]  # mul's self and other, sin's self
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.cos([0.5, 3.0, -6.0]) * [1.0, 2.0, 3.0], rtol=1e-12)
    with engine.autograd.graph.saved_tensors_hooks(lambda t: t * 0, lambda t: t):
        y = leaf([1.0, 2.0])
        q = (y * y).sum()
    q.backward()
    np.testing.assert_array_equal(y.grad.numpy(), [0.0, 0.0])  # the unpacked zeros were used


def test_save_on_cpu_gives_the_same_gradients():
    x = leaf([0.5, 1.5, -2.0])
    with engine.autograd.graph.save_on_cpu():
        (x * x.sin()).sum().backward()
    values = np.array([0.5, 1.5, -2.0])
    np.testing.assert_allclose(x.grad.numpy(), np.sin(values) + values * np.cos(values), rtol=1e-12)


def _node_hooks_run(lib):
    order = []
    a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    b = a * 3
    c = b.exp()

    def pre(grad_outputs):
        order.append(("pre", grad_outputs[0].tolist()))
        return (grad_outputs[0] * 2,)

    def post(grad_inputs, grad_outputs):
        order.append(("post", grad_inputs[0].tolist(), grad_outputs[0].tolist()))
        return (grad_inputs[0] + 1, None)

    handles = [c.grad_fn.register_prehook(pre), b.grad_fn.register_hook(post)]
    c.grad_fn.metadata["step"] = 7
    c.sum().backward()
    first = a.grad.tolist()
    for handle in handles:
        handle.remove()
    a.grad = None
    (a * 3).exp().sum().backward()
    return order, first, a.grad.tolist(), c.grad_fn.metadata, c.grad_fn.name()


def test_node_hooks_metadata_and_removal(torch):
    ours, theirs = _node_hooks_run(engine), _node_hooks_run(torch)
    assert [o[0] for o in ours[0]] == [o[0] for o in theirs[0]] == ["pre", "post"]
    for a, b in zip(ours[0], theirs[0]):
        np.testing.assert_allclose(np.array(a[1:]), np.array(b[1:]), rtol=1e-12)
    np.testing.assert_allclose(np.array(ours[1]), np.array(theirs[1]), rtol=1e-12)
    np.testing.assert_allclose(np.array(ours[2]), np.array(theirs[2]), rtol=1e-12)
    assert ours[3:] == theirs[3:]


def test_pack_hook_sees_the_result_itself(torch):
    found = []
    for lib in (engine, torch):
        seen = []
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        with lib.autograd.graph.saved_tensors_hooks(lambda t: seen.append(t) or t, lambda t: t):  # noqa: B023
            y = x.exp()
        found.append((len(seen), seen[0] is y, y.grad_fn._saved_result is y))
    assert found[0] == found[1] == (1, True, False)
