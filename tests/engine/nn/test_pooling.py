"""engine/nn/pooling.py: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: values by numpy formulas, reprs,
indices and gradients against torch.nn."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import nn


def test_max_pool_takes_each_window_maximum_and_routes_the_gradient_there():
    x = np.random.default_rng(0).permutation(32).reshape(1, 2, 4, 4).astype(np.float64)
    t = engine.tensor(x, requires_grad=True)
    out = nn.MaxPool2d(2)(t)
    expected = x.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(out.detach().numpy(), expected)
    out.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), np.isin(x, expected).astype(np.float64))


def test_avg_pool_and_adaptive_pool_by_formula():
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    np.testing.assert_allclose(nn.AvgPool2d(3)(engine.tensor(x)).numpy(), x.reshape(1, 1, 2, 3, 2, 3).mean(axis=(3, 5)))
    # adaptive windows of 6 -> 4: [0, 2), [1, 3), [3, 5), [4, 6)
    pooled = nn.AdaptiveAvgPool2d((4, 1))(engine.tensor(x)).numpy()[0, 0, :, 0]
    rows = [x[0, 0, a:b].mean() for a, b in ((0, 2), (1, 3), (3, 5), (4, 6))]
    np.testing.assert_allclose(pooled, rows)


@pytest.mark.torch
@pytest.mark.parametrize("kind, args, kwargs", [
    ("MaxPool2d", (2,), {}),
    ("MaxPool2d", (3,), {"stride": 2, "padding": 1, "ceil_mode": True}),
    ("AvgPool2d", (3,), {"stride": 2, "padding": 1, "count_include_pad": False}),
    ("AvgPool2d", ((2, 3),), {"ceil_mode": True}),
    ("AdaptiveAvgPool2d", ((3, 2),), {}),
    ("AdaptiveAvgPool2d", (1,), {}),
])
def test_modules_match_torch_nn(torch, kind, args, kwargs):
    theirs, ours = getattr(torch.nn, kind)(*args, **kwargs), getattr(nn, kind)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    x = np.random.default_rng(2).permutation(2 * 3 * 7 * 8).reshape(2, 3, 7, 8) * 0.1
    tx, ex = torch.tensor(x, requires_grad=True), engine.tensor(x, requires_grad=True)
    t_out, e_out = theirs(tx), ours(ex)
    assert e_out.grad_fn.name() == t_out.grad_fn.name()
    (t_out * t_out).sum().backward()
    (e_out * e_out).sum().backward()
    np.testing.assert_allclose(e_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ex.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.torch
def test_return_indices_module_matches_torch(torch):
    x = np.random.default_rng(3).permutation(50).reshape(1, 2, 5, 5) * 1.0
    values, indices = nn.MaxPool2d(2, return_indices=True)(engine.tensor(x))
    t_values, t_indices = torch.nn.MaxPool2d(2, return_indices=True)(torch.tensor(x))
    np.testing.assert_array_equal(values.numpy(), t_values.numpy())
    np.testing.assert_array_equal(indices.numpy(), t_indices.numpy())


@pytest.mark.torch
@pytest.mark.parametrize("params", [
    {"kernel_size": 2},
    {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
])
def test_max_pool_ties_go_to_the_first_maximum_and_nan_wins_as_in_torch(torch, params):
    # Few distinct values, as after a ReLU: most windows hold their maximum more than once, and
    # PyTorch takes the first in row-major window order (for the index and the gradient alike).
    x = np.random.default_rng(4).integers(0, 3, size=(2, 3, 7, 8)).astype(np.float64)
    x[0, 1, 2, 3] = np.nan
    ex, tx = engine.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    e_values, e_indices = engine.nn.functional.max_pool2d(ex, return_indices=True, **params)
    t_values, t_indices = torch.nn.functional.max_pool2d(tx, return_indices=True, **params)
    np.testing.assert_array_equal(e_values.detach().numpy(), t_values.detach().numpy())  # NaN where torch has it
    np.testing.assert_array_equal(e_indices.numpy(), t_indices.numpy())
    weights = np.random.default_rng(5).standard_normal(t_values.shape)
    (e_values * engine.tensor(weights)).sum().backward()
    (t_values * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(ex.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=0)
