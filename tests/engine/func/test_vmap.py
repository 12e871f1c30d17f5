"""engine/func/vmap.py and its compositions: against torch.func on the same inputs, and against loops.

in_dims/out_dims over pytrees, nesting, chunk_size, randomness, PyTorch's
errors (``.item()`` and control flow on a batched tensor, random ops under
randomness='error', mismatched sizes), and vmap composed with grad, jacrev,
jacfwd, vjp, jvp and hessian (per-sample gradients, batched Jacobians,
model ensembling with functional_call and stack_module_state). Values are
compared with PyTorch's torch.func (skipped without torch) or with a Python
loop of the unbatched function.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import func as ft

RTOL, ATOL = 1e-10, 1e-12


def _np(value):
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)


def _assert_trees_close(ours, theirs):
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs)
        for k in theirs:
            _assert_trees_close(ours[k], theirs[k])
    elif isinstance(theirs, (tuple, list)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _assert_trees_close(a, b)
    else:
        assert tuple(ours.shape) == tuple(theirs.shape)
        np.testing.assert_allclose(_np(ours), _np(theirs), rtol=RTOL, atol=ATOL)


def _both(torch, array):
    return engine.tensor(array), torch.tensor(array)


# ---- vmap on its own -----------------------------------------------------------------


def test_in_dims_and_out_dims_over_pytrees_match_a_loop():
    rng = np.random.default_rng(0)
    a, b, c = rng.standard_normal((3, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)

    def f(pair, scale):
        return {"prod": pair["x"] * pair["y"] + scale, "sum": (pair["x"] - pair["y"]).sum()}

    out = ft.vmap(f, in_dims=({"x": 1, "y": 0}, None), out_dims={"prod": 1, "sum": 0})(
        {"x": engine.tensor(a), "y": engine.tensor(b)}, engine.tensor(c))
    expected_prod = np.stack([a[:, i] * b[i] + c for i in range(5)], axis=1)
    expected_sum = np.array([(a[:, i] - b[i]).sum() for i in range(5)])
    np.testing.assert_allclose(out["prod"].numpy(), expected_prod, rtol=RTOL)
    np.testing.assert_allclose(out["sum"].numpy(), expected_sum, rtol=RTOL)


def test_nested_vmap_is_an_outer_product_of_loops():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((6, 3))
    out = ft.vmap(ft.vmap(lambda u, v: (u * v).sum().sin(), in_dims=(None, 0)), in_dims=(0, None))(
        engine.tensor(x), engine.tensor(y))
    np.testing.assert_allclose(out.numpy(), np.sin(x @ y.T), rtol=RTOL)
    inner_out_dim = ft.vmap(ft.vmap(lambda u: u * 2, out_dims=1), in_dims=1)(engine.tensor(np.ones((2, 3, 4))))
    assert tuple(inner_out_dim.shape) == (3, 4, 2)


def test_chunk_size_gives_the_same_result():
    x = engine.tensor(np.random.default_rng(2).standard_normal((7, 3)))
    whole = ft.vmap(lambda v: v.exp() @ v)(x)
    for chunk in (1, 2, 3, 7, 10):
        np.testing.assert_allclose(ft.vmap(lambda v: v.exp() @ v, chunk_size=chunk)(x).numpy(), whole.numpy(),
                                   rtol=RTOL)


def test_an_output_independent_of_the_batch_is_expanded():
    out = ft.vmap(lambda v: engine.ones(2))(engine.zeros(3, 4))
    assert tuple(out.shape) == (3, 2)
    assert ft.vmap(lambda v: (v, 3), out_dims=(0, None))(engine.zeros(3))[1] == 3


def test_the_function_sees_one_sample():
    seen = []

    def f(v):
        seen.append((tuple(v.shape), v.ndim, v.numel(), len(v)))
        return v.flatten().t().unsqueeze(0).expand(2, 6).T.reshape(-1).sum(0)

    out = ft.vmap(f)(engine.tensor(np.arange(24.0).reshape(4, 2, 3)))
    assert seen == [((2, 3), 2, 6, 2)]
    np.testing.assert_allclose(out.numpy(), 2 * np.arange(24.0).reshape(4, 6).sum(1))


def test_pytorch_errors_under_vmap():
    x = engine.randn(3, 4)
    with pytest.raises(RuntimeError, match=r"vmap: It looks like you're calling \.item\(\) on a Tensor"):
        ft.vmap(lambda v: v.sum().item())(x)
    with pytest.raises(RuntimeError, match="data-dependent control flow"):
        ft.vmap(lambda v: v if v.sum() > 0 else -v)(x)
    with pytest.raises(RuntimeError, match="randomness error mode"):
        ft.vmap(lambda v: v + engine.rand(4))(x)
    with pytest.raises(RuntimeError, match="randomness error mode"):
        ft.vmap(lambda v: engine.nn.functional.dropout(v, 0.5))(x)
    with pytest.raises(ValueError, match="same size in the mapped dimension, got sizes \\[3, 4\\]"):
        ft.vmap(lambda v, w: v * w)(x, engine.randn(4))
    with pytest.raises(ValueError, match="expected in_dim to satisfy -2 <= in_dim < 2"):
        ft.vmap(lambda v: v, in_dims=2)(x)
    with pytest.raises(ValueError, match="in_dims is not compatible with the structure of `inputs`"):
        ft.vmap(lambda v, w: v, in_dims=(0, 0, 0))(x, x)
    with pytest.raises(ValueError, match="can not return a BatchedTensor when out_dim is None"):
        ft.vmap(lambda v: v, out_dims=None)(x)
    with pytest.raises(ValueError, match="must only return Tensors"):
        ft.vmap(lambda v: 3)(x)
    with pytest.raises(RuntimeError, match="Only allowed values for randomness"):
        ft.vmap(lambda v: v, randomness="sometimes")
    with pytest.raises(ValueError, match="chunk_size should be None or greater than 0"):
        ft.vmap(lambda v: v, chunk_size=0)


def test_randomness_same_and_different():
    rows = ft.vmap(lambda v: v + engine.rand(5), randomness="same")(engine.zeros(4, 5))
    assert all(np.array_equal(rows[0].numpy(), rows[i].numpy()) for i in range(4))
    rows = ft.vmap(lambda v: v + engine.rand(5), randomness="different")(engine.zeros(4, 5))
    assert not np.array_equal(rows[0].numpy(), rows[1].numpy())
    kept = ft.vmap(lambda v: engine.nn.functional.dropout(v, 0.5), randomness="different")(engine.ones(4, 64))
    assert set(np.unique(kept.numpy())) <= {0.0, 2.0} and not np.array_equal(kept[0].numpy(), kept[1].numpy())
    kept = ft.vmap(lambda v: engine.nn.functional.dropout(v, 0.5), randomness="same")(engine.ones(4, 64))
    assert np.array_equal(kept[0].numpy(), kept[3].numpy())


def test_gradients_flow_back_through_vmap():
    rng = np.random.default_rng(3)
    x = engine.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    w = engine.tensor(rng.standard_normal(3), requires_grad=True)
    ft.vmap(lambda v: (v * w).sin().sum())(x).sum().backward()
    xn, wn = x.detach().numpy(), w.detach().numpy()
    np.testing.assert_allclose(x.grad.numpy(), np.cos(xn * wn) * wn, rtol=RTOL)
    np.testing.assert_allclose(w.grad.numpy(), (np.cos(xn * wn) * xn).sum(0), rtol=RTOL)


# ---- against torch.func ---------------------------------------------------------------


def _sin_net(lib):
    def f(x, w):
        return (lib.tanh(x @ w) * x.sum()).sum()

    return f


def _vector_fn(lib):
    def f(x):
        return lib.sin(x) * (x**2).sum()

    return f


def _composition(name, lib, fn, xs, w):
    """One composition, computed with ``lib`` (engine or torch) and its ``func`` module."""
    if name == "grad":
        return fn.vmap(fn.grad(_sin_net(lib), argnums=1), in_dims=(0, None))(xs, w)
    if name == "grad-argnums":
        return fn.vmap(fn.grad(_sin_net(lib), argnums=(0, 1)), in_dims=(0, None))(xs, w)
    if name == "jacrev":
        return fn.vmap(fn.jacrev(_vector_fn(lib)))(xs)
    if name == "jacfwd":
        return fn.vmap(fn.jacfwd(_vector_fn(lib)))(xs)
    if name == "hessian":
        return fn.vmap(fn.hessian(_sin_net(lib)), in_dims=(0, None))(xs, w)
    if name == "vjp":
        return fn.vmap(lambda x, ct: fn.vjp(_vector_fn(lib), x)[1](ct)[0])(xs, xs.cos())
    if name == "jvp":
        return fn.vmap(lambda x, t: fn.jvp(_vector_fn(lib), (x,), (t,)))(xs, xs.cos())
    if name == "jacrev(vmap)":
        return fn.jacrev(fn.vmap(_vector_fn(lib)))(xs)
    if name == "grad(vmap)":
        return fn.grad(lambda w_: fn.vmap(_sin_net(lib), in_dims=(0, None))(xs, w_).sum())(w)
    if name == "hessian-vector-valued":
        return fn.hessian(_vector_fn(lib))(xs[0])
    _, pull = fn.vjp(_vector_fn(lib), xs[0])  # "vmap(vjp_fn)"
    return fn.vmap(pull)(lib.eye(3, dtype=lib.float64))


@pytest.mark.parametrize("name", ["grad", "grad-argnums", "jacrev", "jacfwd", "hessian", "vjp", "jvp",
                                  "jacrev(vmap)", "grad(vmap)", "hessian-vector-valued", "vmap(vjp_fn)"])
def test_compositions_match_torch_func(torch, name):
    rng = np.random.default_rng(4)
    xs, w = rng.standard_normal((6, 3)), rng.standard_normal((3, 2))
    results = [_composition(name, lib, fn, lib.tensor(xs), lib.tensor(w))
               for lib, fn in ((engine, ft), (torch, torch.func))]
    _assert_trees_close(*results)


def _model(lib):
    lib.manual_seed(0)
    return lib.nn.Sequential(lib.nn.Linear(4, 6), lib.nn.Tanh(), lib.nn.Linear(6, 3))


def _same_weights(ours, theirs):
    for (_, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        p.data = engine.tensor(q.detach().numpy())


def test_per_sample_gradients_and_ensembling_match_torch_func(torch):
    ours, theirs = _model(engine), _model(torch)
    _same_weights(ours, theirs)
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)
    grads = []
    for lib, fn, model in ((engine, ft, ours), (torch, torch.func, theirs)):
        params = {k: v.detach() for k, v in model.named_parameters()}

        def loss(p, xi, yi, lib=lib, fn=fn, model=model):
            return ((fn.functional_call(model, p, (xi.unsqueeze(0),)) - yi) ** 2).mean()

        grads.append(fn.vmap(fn.grad(loss), in_dims=(None, 0, 0))(params, lib.tensor(x), lib.tensor(y)))
    for k in grads[1]:
        np.testing.assert_allclose(grads[0][k].numpy(), grads[1][k].numpy(), rtol=1e-4, atol=1e-6)

    outs = [_ensemble(lib, fn, x, torch) for lib, fn in ((engine, ft), (torch, torch.func))]
    np.testing.assert_allclose(outs[0].detach().numpy(), outs[1].detach().numpy(), rtol=1e-5, atol=1e-6)


def _ensemble(lib, fn, x, torch):
    """Three models of one architecture run at once: vmap over their stacked states."""
    models = [_model(lib) for _ in range(3)]
    if lib is engine:
        for m, t in zip(models, [_model(torch) for _ in range(3)]):
            _same_weights(m, t)
    params, buffers = fn.stack_module_state(models)
    assert all(v.requires_grad for v in params.values())
    return fn.vmap(lambda p, b, x_: fn.functional_call(models[0], (p, b), (x_,)), in_dims=(0, 0, None))(
        params, buffers, lib.tensor(x))


def test_functional_call_restores_the_module_even_when_it_raises():
    model = _model(engine)
    before = dict(model.named_parameters())
    zeros = {k: engine.zeros_like(v) for k, v in before.items()}
    assert float(ft.functional_call(model, zeros, engine.ones(1, 4)).abs().sum()) == 0.0
    with pytest.raises(RuntimeError):
        ft.functional_call(model, zeros, (engine.ones(1, 5),))
    assert all(model.get_submodule(k.rsplit(".", 1)[0]).__dict__[k.rsplit(".", 1)[1]] is v for k, v in before.items())
    assert dict(model.named_parameters()).keys() == before.keys()
    assert all(dict(model.named_parameters())[k] is v for k, v in before.items())
    from engine.nn.utils.stateless import functional_call

    assert functional_call is ft.functional_call


def test_cross_entropy_under_vmap_equals_a_loop():
    # nll_loss reads its targets' array: under vmap it runs once per sample (batching.per_sample).
    logits = engine.tensor(np.random.default_rng(8).standard_normal((5, 2, 4)))
    targets = engine.tensor([[0, 3], [1, 1], [2, 0], [3, 2], [0, 0]])
    out = ft.vmap(engine.nn.functional.cross_entropy)(logits, targets)
    expected = [float(engine.nn.functional.cross_entropy(logits[i], targets[i])) for i in range(5)]
    np.testing.assert_allclose(out.numpy(), expected, rtol=RTOL)


def test_engine_vmap_is_func_vmap():
    assert engine.vmap is ft.vmap


def test_the_dispatch_is_removed_when_vmap_returns_or_raises():
    from engine.autograd import function

    ft.vmap(lambda v: v * 2)(engine.ones(2, 2))
    assert function.vmap_hook is None and engine.creation.vmap_random is None
    with pytest.raises(ZeroDivisionError):
        ft.vmap(lambda v: 1 / 0)(engine.ones(2, 2))
    assert function.vmap_hook is None and engine.creation.vmap_random is None


def test_none_is_a_leaf_passed_through_unmapped_and_refused_as_an_output(torch):
    for lib, fn in ((engine, ft), (torch, torch.func)):
        out = fn.vmap(lambda v, n: v * 2 if n is None else v, in_dims=(0, None))(lib.ones(3, 2), None)
        assert tuple(out.shape) == (3, 2)
        with pytest.raises(ValueError, match="must only return Tensors, got type <class 'NoneType'>"):
            fn.vmap(lambda v: (v, None))(lib.ones(3, 2))
