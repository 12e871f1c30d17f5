"""Jacobians and Hessians: engine.autograd.functional vs PyTorch (and JAX when installed).

- Jacobian of ``tanh(W @ x)`` for n = 16, 128, 512: ours (strategy="auto",
  which is reverse mode here) against ``torch.autograd.functional.jacobian(
  vectorize=True)``, ``torch.func.jacrev`` and JAX's jitted ``jacrev``.
- Hessian of ``sum(sin(x) * x**2) + sum((A @ x)**2)`` for n = 16, 128: ours
  (forward-over-reverse) against ``torch.autograd.functional.hessian(
  vectorize=True)``, ``torch.func.hessian`` and JAX's jitted ``hessian``.
- hvp (forward-over-reverse) against vhp (reverse-over-reverse) on that function.

float32. Ours runs with the engine's BLAS setting (what ``import engine`` gives)
and, in its own column, with numpy's default BLAS pool (one thread per core);
PyTorch on one thread.
"""

from __future__ import annotations

import numpy as np

import engine
from bench.timing import (
    Table,
    engine_threads,
    fmt_time,
    numpy_default_threads,
    optional_jax,
    optional_torch,
    per_call_seconds,
    per_call_seconds_by_threads,
    ratio,
)
from engine.autograd import functional

JACOBIAN_SIZES = (16, 128, 512)
HESSIAN_SIZES = (16, 128)


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return (
        (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32),
        rng.standard_normal(n).astype(np.float32),
    )


def _ours_both_ways(fn) -> tuple[float, float]:
    """(seconds with the engine's BLAS setting, seconds with numpy's default pool)."""
    return tuple(per_call_seconds_by_threads(fn, [engine_threads(), numpy_default_threads()]))


def _jacobian_timings(n, torch, jax):
    w, x = _data(n)
    weight, point = engine.tensor(w), engine.tensor(x)
    ours = _ours_both_ways(lambda: functional.jacobian(lambda v: engine.tanh(weight @ v), point))
    expected = (1 - np.tanh(w.astype(np.float64) @ x) ** 2)[:, None] * w
    got = functional.jacobian(lambda v: engine.tanh(weight @ v), point).numpy()
    assert np.allclose(got, expected, atol=1e-4), "jacobian mismatch"
    torch_af = torch_jacrev = jax_time = None
    if torch is not None:
        tw, tx = torch.from_numpy(w), torch.from_numpy(x)

        def fn(v):
            return torch.tanh(tw @ v)

        torch_af = per_call_seconds(lambda: torch.autograd.functional.jacobian(fn, tx, vectorize=True))
        jacrev = torch.func.jacrev(fn)
        torch_jacrev = per_call_seconds(lambda: jacrev(tx))
    if jax is not None:
        import jax.numpy as jnp

        jw, jx = jnp.asarray(w), jnp.asarray(x)
        jitted = jax.jit(jax.jacrev(lambda v: jnp.tanh(jw @ v)))
        jax_time = per_call_seconds(lambda: jitted(jx).block_until_ready())
    return ours, torch_af, torch_jacrev, jax_time


def _hessian_timings(n, torch, jax):
    a, x = _data(n, seed=1)
    matrix, point = engine.tensor(a), engine.tensor(x)

    def f(v):
        return (engine.sin(v) * v**2).sum() + ((matrix @ v) ** 2).sum()

    ours = _ours_both_ways(lambda: functional.hessian(f, point))
    x64, a64 = x.astype(np.float64), a.astype(np.float64)
    expected = np.diag(-np.sin(x64) * x64**2 + 4 * x64 * np.cos(x64) + 2 * np.sin(x64)) + 2 * a64.T @ a64
    assert np.allclose(functional.hessian(f, point).numpy(), expected, atol=1e-3), "hessian mismatch"
    torch_af = torch_hessian = jax_time = None
    if torch is not None:
        ta, tx = torch.from_numpy(a), torch.from_numpy(x)

        def g(v):
            return (torch.sin(v) * v**2).sum() + ((ta @ v) ** 2).sum()

        torch_af = per_call_seconds(lambda: torch.autograd.functional.hessian(g, tx, vectorize=True))
        hess = torch.func.hessian(g)
        torch_hessian = per_call_seconds(lambda: hess(tx))
    if jax is not None:
        import jax.numpy as jnp

        ja, jx = jnp.asarray(a), jnp.asarray(x)
        jitted = jax.jit(jax.hessian(lambda v: (jnp.sin(v) * v**2).sum() + ((ja @ v) ** 2).sum()))
        jax_time = per_call_seconds(lambda: jitted(jx).block_until_ready())
    return ours, torch_af, torch_hessian, jax_time


def _product_timings(n, torch):
    a, x = _data(n, seed=2)
    matrix, point, v = engine.tensor(a), engine.tensor(x), engine.tensor(np.ones(n, dtype=np.float32))

    def f(t):
        return (engine.sin(t) * t**2).sum() + ((matrix @ t) ** 2).sum()

    hvp = per_call_seconds(lambda: functional.hvp(f, point, v))
    vhp = per_call_seconds(lambda: functional.vhp(f, point, v))
    torch_hvp = None
    if torch is not None:
        ta, tx, tv = torch.from_numpy(a), torch.from_numpy(x), torch.ones(n)

        def g(t):
            return (torch.sin(t) * t**2).sum() + ((ta @ t) ** 2).sum()

        torch_hvp = per_call_seconds(lambda: torch.autograd.functional.hvp(g, tx, tv))
    return hvp, vhp, torch_hvp


def _ours_against(title, others, sizes, timings):
    """A row per size: our time (the engine's BLAS threads, numpy's), the others' (``others`` maps each column
    to its ratio's label), ours / each, and numpy's threads against the engine's."""
    numpy_default = numpy_default_threads()
    table = Table(f"{title}; BLAS: the engine's {engine_threads()} thread(s), and numpy's default {numpy_default}",
                  ["n", "ours", f"ours, numpy's {numpy_default} BLAS threads", *others,
                   *(f"ours / {label}" for label in others.values()), "numpy's threads / engine's"])
    for n in sizes:
        (ours, ours_default), *theirs = timings(n)
        table.add(n, fmt_time(ours), fmt_time(ours_default), *(fmt_time(t) for t in theirs),
                  *(ratio(ours, t) for t in theirs), ratio(ours_default, ours))
    return table


def run() -> list[Table]:
    torch = optional_torch()
    jax = optional_jax()
    jac = _ours_against(
        "Jacobian of tanh(W @ x) (float32)",
        {"torch.autograd.functional (vectorize)": "torch AF", "torch.func.jacrev": "jacrev", "jax.jit(jacrev)": "jax"},
        JACOBIAN_SIZES,
        lambda n: _jacobian_timings(n, torch, jax),
    )
    hes = _ours_against(
        "Hessian of sum(sin(x) * x**2) + sum((A @ x)**2) (float32)",
        {"torch.autograd.functional (vectorize)": "torch AF", "torch.func.hessian": "torch.func",
         "jax.jit(hessian)": "jax"},
        HESSIAN_SIZES,
        lambda n: _hessian_timings(n, torch, jax),
    )
    products = Table(
        f"Hessian-vector products of the same function (float32, the engine's {engine_threads()} BLAS thread(s))",
        ["n", "hvp (forward-over-reverse)", "vhp (reverse-over-reverse)", "torch.autograd.functional.hvp",
         "hvp / vhp", "hvp / torch"],
    )
    for n in HESSIAN_SIZES:
        hvp, vhp, torch_hvp = _product_timings(n, torch)
        products.add(n, fmt_time(hvp), fmt_time(vhp), fmt_time(torch_hvp), ratio(hvp, vhp), ratio(hvp, torch_hvp))
    return [jac, hes, products]
