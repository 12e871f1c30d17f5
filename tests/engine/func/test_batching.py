"""engine/func/batching.py: every table op under vmap equals a Python loop over the batch.

Driven by the table's op cases (``tests/engine/opcases.py``): for each case
and for several ``in_dims`` / ``out_dims`` (every input mapped along axis 0;
the first input mapped along its last axis and the others shared; only the
last input mapped), the op run under ``vmap`` must give what running it once
per sample and stacking gives, and so must the gradient taken back through
the batched run (the graph ``vmap`` recorded) against the one through the
loop. Nothing here is computed by the code under test alone: the loop runs
the op unbatched, on plain tensors.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import ops
from engine.autograd import grad
from engine.func import vmap
from tests.engine.opcases import all_cases

TABLE = ops.table
BATCH = 3
CASES = all_cases(TABLE)


def _ids(cases):
    return [c.id for c in cases]


def _samples(case):
    """BATCH draws of the case's inputs (float64, or bool), one list per input (a variadic op: the list's)."""
    draws = [case.arrays(seed=s) for s in range(BATCH)]
    if case.variadic:
        return [[d[0][k] for d in draws] for k in range(len(draws[0][0]))]
    return [[d[i] for d in draws] for i in range(len(draws[0]))]


def _configs(count):
    """``(name, in_dims per input, out_dims)``: which inputs are mapped, along which axis."""
    configs = [("all-0", [0] * count, 0), ("all-0-out-last", [0] * count, -1)]
    configs.append(("first-last-axis", ["last"] + [None] * (count - 1), 0))
    if count > 1:
        configs.append(("only-last", [None] * (count - 1) + [0], -1))
    return configs


def _stacked(values, dim):
    """The samples of one input stacked along ``dim`` ("last": after its own axes)."""
    axis = values[0].ndim if dim == "last" else dim
    return np.stack(values, axis=axis)


def _tensor(array, requires_grad):
    t = engine.tensor(array)
    return t.requires_grad_() if requires_grad and array.dtype == np.float64 else t


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _run_both(case, config):
    op = TABLE[case.op]
    _, in_dims, out_dim = config
    samples = _samples(case)
    mapped = [None if d is None else _stacked(s, d) for s, d in zip(samples, in_dims)]
    shared = [s[0] for s in samples]  # an unmapped input: the same value for every sample
    inputs = [_tensor(m if m is not None else sh, True) for m, sh in zip(mapped, shared)]
    dims = [None if d is None else (-1 if d == "last" else d) for d in in_dims]

    def call(*xs):
        return op(list(xs), **case.params) if case.variadic else op(*xs, **case.params)

    looped = []
    for b in range(BATCH):
        sample = [x.select(d % x.ndim, b) if d is not None else x for x, d in zip(inputs, dims)]
        looped.append(call(*sample))
    if case.variadic:
        batched = vmap(lambda xs: call(*xs), in_dims=(dims,), out_dims=out_dim)(inputs)
    else:
        batched = vmap(call, in_dims=tuple(dims), out_dims=out_dim)(*inputs)
    return inputs, looped, batched, out_dim


def _moved(t, dim):
    dim %= t.ndim
    order = list(range(1, t.ndim))
    order.insert(dim, 0)
    return t.permute(*order)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_op_under_vmap_equals_a_loop_over_the_batch(case):
    count = len(case.shapes[0]) if case.variadic else len(case.shapes)
    for config in _configs(count):
        inputs, looped, batched, out_dim = _run_both(case, config)
        outputs = batched if isinstance(batched, tuple) else (batched,)
        for k, out in enumerate(outputs):
            expected = _moved(engine.stack([p[k] if isinstance(p, tuple) else p for p in looped], dim=0), out_dim)
            assert tuple(out.shape) == tuple(expected.shape), (config[0], k)
            np.testing.assert_allclose(out.detach().numpy().astype(np.float64),
                                       expected.detach().numpy().astype(np.float64),
                                       rtol=1e-12, atol=1e-12, err_msg=config[0])
        _check_gradients(inputs, looped, outputs[0], out_dim, config[0])


def _check_gradients(inputs, looped, batched, out_dim, name):
    """The gradient through the batched run equals the one through the loop (same cotangent)."""
    leaves = [x for x in inputs if isinstance(x, engine.Tensor) and x.requires_grad]
    if not leaves or not batched.requires_grad:
        return
    expected_out = _moved(engine.stack([_first(p) for p in looped], dim=0), out_dim)
    cotangent = engine.tensor(np.random.default_rng(7).standard_normal(tuple(batched.shape)), device=batched.device)
    through_vmap = grad((batched * cotangent).sum(), leaves, allow_unused=True, materialize_grads=True)
    through_loop = grad((expected_out * cotangent).sum(), leaves, allow_unused=True, materialize_grads=True)
    for a, b in zip(through_vmap, through_loop):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"gradient, {name}")



# ---- the layouts vmap(grad) gives the table's matmul ----------------------------------------
# Under vmap(grad(f)) a shared weight is expanded to the batch (a broadcast view) and a per-sample
# vector is a one-row matrix, so matmul meets a repeated operand and outer products (k = 1). Both
# must give numpy's float64 products and their gradients, whatever path the forward takes.


def test_matmul_by_a_broadcast_matrix_equals_numpy_and_its_gradient_sums_the_batch():
    rng = np.random.default_rng(3)
    x_array, w_array = rng.standard_normal((5, 2, 3)), rng.standard_normal((3, 4))
    g_array = rng.standard_normal((5, 2, 4))
    x, w = engine.tensor(x_array, requires_grad=True), engine.tensor(w_array, requires_grad=True)
    out = engine.matmul(x, w.expand(5, 3, 4))
    np.testing.assert_allclose(out.detach().numpy(), np.stack([xb @ w_array for xb in x_array]), rtol=1e-12)
    (out * engine.tensor(g_array)).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), sum(xb.T @ gb for xb, gb in zip(x_array, g_array)), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), np.stack([gb @ w_array.T for gb in g_array]), rtol=1e-12)


def test_one_matrix_times_a_stack_of_columns_equals_numpy_and_its_gradients():
    rng = np.random.default_rng(6)
    a_array, columns = rng.standard_normal((1, 4, 3)), rng.standard_normal((2, 5, 3, 1))
    g_array = rng.standard_normal((2, 5, 4, 1))
    a, c = engine.tensor(a_array, requires_grad=True), engine.tensor(columns, requires_grad=True)
    out = engine.matmul(a, c)
    np.testing.assert_allclose(out.detach().numpy(), np.einsum("ik,bnkj->bnij", a_array[0], columns), rtol=1e-12)
    (out * engine.tensor(g_array)).sum().backward()
    np.testing.assert_allclose(c.grad.numpy(), np.einsum("ik,bnij->bnkj", a_array[0], g_array), rtol=1e-12)
    np.testing.assert_allclose(a.grad.numpy()[0], np.einsum("bnij,bnkj->ik", g_array, columns), rtol=1e-12)


def test_matmul_with_inner_dimension_one_is_an_outer_product_per_matrix():
    rng = np.random.default_rng(4)
    columns, rows = rng.standard_normal((2, 5, 4, 1)), rng.standard_normal((5, 1, 3))
    out = engine.matmul(engine.tensor(columns), engine.tensor(rows))
    assert tuple(out.shape) == (2, 5, 4, 3)
    expected = [[np.outer(c[:, 0], r[0]) for c, r in zip(cs, rows)] for cs in columns]
    np.testing.assert_allclose(out.numpy(), np.array(expected), rtol=1e-15)


def test_per_sample_gradients_of_a_linear_layer_equal_a_loop_of_backward_passes():
    from engine import func

    rng = np.random.default_rng(5)
    layer = engine.nn.Linear(6, 4).double()
    params = {k: v.detach() for k, v in layer.named_parameters()}
    x, y = engine.tensor(rng.standard_normal((7, 6))), engine.tensor(rng.standard_normal((7, 4)))

    def loss(p, xi, yi):
        return ((func.functional_call(layer, p, (xi.unsqueeze(0),)) - yi) ** 2).mean()

    per_sample = func.vmap(func.grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(7):
        layer.zero_grad()
        ((layer(x[i : i + 1]) - y[i]) ** 2).mean().backward()
        for name, p in layer.named_parameters():
            np.testing.assert_allclose(per_sample[name][i].numpy(), p.grad.numpy(), rtol=1e-12, atol=1e-15)
