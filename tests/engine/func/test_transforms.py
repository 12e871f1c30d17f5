"""engine/func.py: the composable transforms (grad, vjp, jvp, jacrev, jacfwd, hessian) nest to
the hessian; argnums and has_aux. Expected values are analytic formulas in float64."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import func as ft

f64 = engine.float64


def test_func_transforms_compose_to_the_hessian():
    a = engine.randn(4, 4, dtype=f64)
    x = engine.randn(4, dtype=f64)

    def f(t):
        return t @ a @ t + (t.sin() * t**2).sum()

    xn, an = x.numpy(), a.numpy()
    expected = an + an.T + np.diag(2 * np.sin(xn) + 4 * xn * np.cos(xn) - xn**2 * np.sin(xn))
    for name, transform in [("jacfwd(jacrev)", ft.jacfwd(ft.jacrev(f))), ("jacrev(jacrev)", ft.jacrev(ft.jacrev(f))),
                            ("jacrev(jacfwd)", ft.jacrev(ft.jacfwd(f))), ("hessian", ft.hessian(f)),
                            ("jacfwd(grad)", ft.jacfwd(ft.grad(f)))]:
        np.testing.assert_allclose(transform(x).numpy(), expected, rtol=1e-12, atol=1e-12, err_msg=name)


def test_func_grad_vjp_jvp_argnums_and_aux():
    x, y = engine.randn(3, dtype=f64), engine.randn(3, dtype=f64)
    assert ft.grad(ft.grad(lambda t: (t**3).sum()))(engine.tensor([2.0])).tolist() == [12.0]
    gx, gy = ft.grad(lambda a, b: (a * b.exp()).sum(), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx.numpy(), np.exp(y.numpy()))
    np.testing.assert_allclose(gy.numpy(), x.numpy() * np.exp(y.numpy()))
    gradient, aux = ft.grad(lambda t: ((t**2).sum(), t.mean()), has_aux=True)(x)
    np.testing.assert_allclose(gradient.numpy(), 2 * x.numpy())
    assert aux.item() == pytest.approx(x.numpy().mean()) and not aux.requires_grad
    _, vjp_fn = ft.vjp(lambda t: t.sin(), x)
    np.testing.assert_allclose(vjp_fn(y)[0].numpy(), np.cos(x.numpy()) * y.numpy())
    np.testing.assert_allclose(vjp_fn(y)[0].numpy(), np.cos(x.numpy()) * y.numpy())  # reusable
    _, tangent = ft.jvp(lambda a, b: a * b, (x, y), (engine.ones(3, dtype=f64), engine.zeros(3, dtype=f64)))
    np.testing.assert_allclose(tangent.numpy(), y.numpy())
    with pytest.raises(RuntimeError, match="scalar Tensor"):
        ft.grad(lambda t: t * 2)(x)


# ---- pytrees ------------------------------------------------------------------------------


def _tree_np(tree):
    if isinstance(tree, dict):
        return {k: _tree_np(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_tree_np(v) for v in tree)
    return tree.detach().numpy()


def _assert_tree(ours, theirs):
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs)
        for k in theirs:
            _assert_tree(ours[k], theirs[k])
    elif isinstance(theirs, (tuple, list)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _assert_tree(a, b)
    else:
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["grad-dict", "grad-nested-argnums", "grad-aux-tree", "vjp-tree", "jvp-tree",
                                  "jacrev-tree", "jacfwd-tree", "hessian-argnums-1", "hessian-tuple-argnums"])
def test_pytrees_match_torch_func(torch, name):
    rng = np.random.default_rng(6)
    a, b, c = rng.standard_normal(3), rng.standard_normal((2, 3)), rng.standard_normal(2)
    results = []
    for lib, fn in ((engine, ft), (torch, torch.func)):
        params = {"w": lib.tensor(b), "b": lib.tensor(c)}
        x = lib.tensor(a)

        def net(p, v, lib=lib):
            return lib.tanh(p["w"] @ v + p["b"])

        def loss(p, v, lib=lib):
            return (net(p, v) ** 2).sum()

        if name == "grad-dict":
            results.append(fn.grad(loss)(params, x))
        elif name == "grad-nested-argnums":
            results.append(fn.grad(lambda pv: loss(pv[0], pv[1]["x"]))((params, {"x": x})))
        elif name == "grad-aux-tree":
            g, aux = fn.grad(lambda p, v: (loss(p, v), {"out": net(p, v), "n": [v.sum()]}), has_aux=True)(params, x)
            results.append((g, aux))
        elif name == "vjp-tree":
            out, pull = fn.vjp(lambda p, x=x, net=net: {"y": net(p, x), "s": (p["w"] ** 2).sum()}, params)
            results.append((out, pull({"y": lib.ones(2, dtype=lib.float64), "s": lib.tensor(2.0, dtype=lib.float64)})))
        elif name == "jvp-tree":
            tangent = {"w": lib.ones(2, 3, dtype=lib.float64), "b": lib.zeros(2, dtype=lib.float64)}
            results.append(fn.jvp(lambda p, x=x, net=net: [net(p, x), p["b"].exp()], (params,), (tangent,)))
        elif name == "jacrev-tree":
            results.append(fn.jacrev(lambda p, v: {"y": net(p, v)}, argnums=(0, 1))(params, x))
        elif name == "jacfwd-tree":
            results.append(fn.jacfwd(lambda p, v: (net(p, v), v.sum()), argnums=(0, 1))(params, x))
        elif name == "hessian-argnums-1":
            results.append(fn.hessian(lambda p, v: net(p, v), argnums=1)(params, x))
        elif name == "hessian-tuple-argnums":
            results.append(fn.hessian(lambda u, v: (u.sin() * v.cos()).sum(), argnums=(0, 1))(x, x * 2))
    _assert_tree(_tree_np(results[0]), _tree_np(results[1]))


def test_hessian_of_a_vector_valued_function_is_three_dimensional():
    x = engine.randn(3, dtype=f64)
    h = ft.hessian(lambda t: t.sin() * t.sum())(x)
    assert tuple(h.shape) == (3, 3, 3)
    xn = x.numpy()
    s = xn.sum()
    expected = np.zeros((3, 3, 3))
    for i in range(3):
        for j in range(3):
            for k in range(3):
                d = -np.sin(xn[i]) * s * (i == j) * (i == k) + np.cos(xn[i]) * ((i == j) + (i == k))
                expected[i, j, k] = d
    np.testing.assert_allclose(h.numpy(), expected, rtol=1e-12, atol=1e-12)
