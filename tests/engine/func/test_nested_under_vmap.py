"""Nested transforms under ``vmap``: vjp of grad, vjp of jacrev, grad of grad, jacrev of grad,
Hessians built from vjps, for several batch sizes.

A transform nested in another one under vmap hands its arguments to the outer transform's
machinery, which makes history-keeping views of them in physical mode; those must still
enter the function one sample at a time. When they did not, the function mixed the samples
(a ``sum`` ran over the whole batch) and ``vmap(vjp(grad(f)))`` came out batch-size times too
large. Values are checked against analytic formulas in float64 (always) and against
PyTorch's torch.func on the same inputs (skipped without torch).
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import func as ft

RTOL, ATOL = 1e-10, 1e-12
BATCH_SIZES = [1, 2, 3, 5]


def _np(value):
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)


def _assert_trees_close(ours, theirs, what):
    if isinstance(theirs, (tuple, list)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), what
        for a, b in zip(ours, theirs):
            _assert_trees_close(a, b, what)
        return
    assert tuple(ours.shape) == tuple(theirs.shape), what
    np.testing.assert_allclose(_np(ours), _np(theirs), rtol=RTOL, atol=ATOL, err_msg=what)


# ---- analytic: fails before the fix, torch or not -------------------------------------------


def _cubes(x):
    return (x * x * x).sum()


@pytest.mark.parametrize("size", BATCH_SIZES)
def test_vmap_of_vjp_of_grad_is_the_hessian_vector_product_at_every_batch_size(size):
    """f = sum(x^3): H = diag(6 x), so v^T H = 6 x v per sample, whatever the batch size (it was
    multiplied by the batch size)."""
    xs = np.random.default_rng(size).standard_normal((size, 4))
    v = np.array([1.0, -0.5, 2.0, 0.25])
    X, V = engine.tensor(xs, dtype=engine.float64), engine.tensor(v, dtype=engine.float64)
    shared = ft.vmap(lambda x: ft.vjp(ft.grad(_cubes), x)[1](V)[0])(X)
    np.testing.assert_allclose(shared.numpy(), 6 * xs * v, rtol=1e-13)
    per_sample = ft.vmap(lambda x, c: ft.vjp(ft.grad(_cubes), x)[1](c)[0])(X, X.cos())
    np.testing.assert_allclose(per_sample.numpy(), 6 * xs * np.cos(xs), rtol=1e-13)


@pytest.mark.parametrize("size", BATCH_SIZES)
def test_vmap_of_grad_of_grad_and_vjp_of_vjp_are_per_sample(size):
    """d²/dx² x³ = 6x per sample (grad of grad refused a scalar per sample; vjp of vjp refused the
    shape of its cotangent: both saw the whole batch as one sample)."""
    xs = np.linspace(-1.0, 2.0, size)
    X = engine.tensor(xs, dtype=engine.float64)
    one = engine.tensor(1.0, dtype=engine.float64)
    np.testing.assert_allclose(ft.vmap(ft.grad(ft.grad(lambda t: t**3)))(X).numpy(), 6 * xs, rtol=1e-13)

    def second(t):
        return ft.vjp(lambda s: ft.vjp(lambda r: r**3, s)[1](one)[0], t)[1](one)[0]

    np.testing.assert_allclose(ft.vmap(second)(X).numpy(), 6 * xs, rtol=1e-13)


def test_nested_transforms_under_nested_vmaps():
    """Two vmaps around vjp of grad: each (i, j) pair is its own sample."""
    a = np.random.default_rng(7).standard_normal((3, 2, 4))
    X = engine.tensor(a, dtype=engine.float64)
    v = engine.ones(4, dtype=engine.float64)
    inner = ft.vmap(ft.vmap(lambda x: ft.vjp(ft.grad(_cubes), x)[1](v)[0]))
    np.testing.assert_allclose(inner(X).numpy(), 6 * a, rtol=1e-13)


# ---- against torch.func --------------------------------------------------------------------


def _scalar_fn(lib):
    def f(x, w):
        return (lib.sin(x) * w).sum() * (x * x).sum() + (x**3 * w).sum()

    return f


def _vector_fn(lib):
    def f(x):
        return lib.tanh(x) * (x**2).sum()

    return f


def _nested(name, lib, fn, xs, w, v):
    """One nested composition under vmap, computed with ``lib`` (engine or torch) and its ``func``."""
    f, g = _scalar_fn(lib), _vector_fn(lib)
    if name == "vjp(grad)":
        return fn.vmap(lambda x: fn.vjp(lambda y: fn.grad(f)(y, w), x)[1](v)[0])(xs)
    if name == "vjp(grad) batched cotangent":
        return fn.vmap(lambda x, c: fn.vjp(lambda y: fn.grad(f)(y, w), x)[1](c)[0])(xs, xs.cos())
    if name == "vjp(grad) argnums w":
        return fn.vmap(lambda x: fn.vjp(lambda u: fn.grad(f, argnums=1)(x, u), w)[1](v)[0])(xs)
    if name == "vjp(jacrev)":
        return fn.vmap(lambda x: fn.vjp(fn.jacrev(g), x)[1](lib.outer(v, v))[0])(xs)
    if name == "grad(grad)":
        return fn.vmap(fn.grad(lambda t: fn.grad(lambda s: (lib.sin(s) * s**2).sum())(t).sum()))(xs)
    if name == "jacrev(grad)":
        return fn.vmap(fn.jacrev(lambda y: fn.grad(f)(y, w)))(xs)
    if name == "jacfwd(grad)":
        return fn.vmap(fn.jacfwd(lambda y: fn.grad(f)(y, w)))(xs)
    if name == "jacrev(jacrev)":
        return fn.vmap(fn.jacrev(fn.jacrev(g)))(xs)
    if name == "jvp(grad)":
        return fn.vmap(lambda x: fn.jvp(lambda y: fn.grad(f)(y, w), (x,), (v,))[1])(xs)
    if name == "hessian":
        return fn.vmap(fn.hessian(f), in_dims=(0, None))(xs, w)
    if name == "hessian via vjp":  # rows v^T H over the identity, by an inner vmap
        eye = lib.eye(xs.shape[-1], dtype=xs.dtype)
        return fn.vmap(lambda x: fn.vmap(lambda e: fn.vjp(lambda y: fn.grad(f)(y, w), x)[1](e)[0])(eye))(xs)
    if name == "grad of vjp(grad)":
        return fn.vmap(fn.grad(lambda x: (fn.vjp(lambda y: fn.grad(f)(y, w), x)[1](v)[0] ** 2).sum()))(xs)
    raise AssertionError(name)


NESTED = ["vjp(grad)", "vjp(grad) batched cotangent", "vjp(grad) argnums w", "vjp(jacrev)", "grad(grad)",
          "jacrev(grad)", "jacfwd(grad)", "jacrev(jacrev)", "jvp(grad)", "hessian", "hessian via vjp",
          "grad of vjp(grad)"]


@pytest.mark.parametrize("size", BATCH_SIZES)
@pytest.mark.parametrize("name", NESTED)
def test_nested_transforms_under_vmap_match_torch_func(torch, name, size):
    rng = np.random.default_rng(size)
    xs, w, v = rng.standard_normal((size, 3)), rng.standard_normal(3), rng.standard_normal(3)
    results = [_nested(name, lib, fn, lib.tensor(xs), lib.tensor(w), lib.tensor(v))
               for lib, fn in ((engine, ft), (torch, torch.func))]
    _assert_trees_close(*results, what=f"{name} at batch size {size}")
