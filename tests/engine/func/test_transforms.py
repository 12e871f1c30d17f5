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
