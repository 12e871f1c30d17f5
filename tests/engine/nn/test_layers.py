"""engine/nn/layers.py: Linear, the activations, Flatten and Dropout: values and gradients by
numpy formulas in float64 and gradcheck, and against torch.nn where PyTorch is installed."""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import nn
from engine.autograd import gradcheck
from engine.nn import functional as F


def test_linear_forward_and_grads_by_formula():
    layer = nn.Linear(5, 3, dtype=engine.float64)
    x = engine.randn(4, 5, dtype=engine.float64, requires_grad=True)
    out = layer(x)
    assert out.grad_fn.name() == "AddmmBackward0"
    w, b, xv = layer.weight.detach().numpy(), layer.bias.detach().numpy(), x.detach().numpy()
    np.testing.assert_allclose(out.detach().numpy(), xv @ w.T + b, rtol=1e-12)
    g = np.arange(12.0).reshape(4, 3)
    out.backward(engine.tensor(g))
    np.testing.assert_allclose(layer.weight.grad.numpy(), g.T @ xv, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad.numpy(), g.sum(0), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), g @ w, rtol=1e-12)


# ---- activations, softmax, dropout --------------------------------------------------------

ACTIVATIONS = [
    ("relu", nn.ReLU(), lambda x: np.maximum(x, 0)),
    ("tanh", nn.Tanh(), np.tanh),
    ("sigmoid", nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    ("gelu", nn.GELU(), lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    ("gelu_tanh", nn.GELU("tanh"),
     lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    ("softmax", nn.Softmax(dim=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    ("log_softmax", nn.LogSoftmax(dim=1), lambda x: x - np.log(np.exp(x).sum(1, keepdims=True))),
    ("softplus", nn.Softplus(), lambda x: np.log1p(np.exp(x))),
    ("identity", nn.Identity(), lambda x: x),
]


def _input64():
    rng = np.random.default_rng(3)
    return rng.standard_normal((4, 5)) * 2


@pytest.mark.parametrize("name, module, formula", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_values_and_gradients(name, module, formula):
    x = _input64()
    out = module(engine.tensor(x))
    np.testing.assert_allclose(out.numpy(), formula(x), rtol=1e-10, atol=1e-12)
    t = engine.tensor(x, requires_grad=True)
    assert gradcheck(lambda v: module(v), (t,))


@pytest.mark.parametrize("name, module, formula", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_matches_pytorch(name, module, formula, torch):
    x = _input64()
    theirs_fn = {
        "relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(), "sigmoid": torch.nn.Sigmoid(), "gelu": torch.nn.GELU(),
        "gelu_tanh": torch.nn.GELU("tanh"), "softmax": torch.nn.Softmax(dim=1),
        "log_softmax": torch.nn.LogSoftmax(dim=1), "softplus": torch.nn.Softplus(), "identity": torch.nn.Identity(),
    }[name]
    mine = engine.tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    weights = np.linspace(-1, 1, 20).reshape(4, 5)
    (module(mine) * engine.tensor(weights)).sum().backward()
    (theirs_fn(theirs) * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(module(mine).detach().numpy(), theirs_fn(theirs).detach().numpy(), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_flatten():
    x = engine.randn(2, 3, 4)
    assert nn.Flatten()(x).shape == (2, 12)
    assert nn.Flatten(0, 1)(x).shape == (6, 4)
    assert F.flatten(x).shape == (24,)


def test_dropout_masks_scales_and_routes_gradients():
    layer = nn.Dropout(p=0.25)
    x = engine.ones(200, 100, requires_grad=True)
    out = layer(x)
    values = out.detach().numpy()
    kept = values != 0
    assert kept.mean() == pytest.approx(0.75, abs=0.02)
    np.testing.assert_allclose(values[kept], 1 / 0.75, rtol=1e-6)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), values, rtol=1e-6)  # d out / d x is the scaled mask
    layer.eval()
    assert layer(x) is x
    assert (nn.Dropout(1.0)(engine.ones(3)).numpy() == 0).all()
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_dropout_draws_from_the_generator_in_scope():
    x = engine.ones(50)
    with nn.init.use_generator(engine.Generator().manual_seed(3)):
        first = F.dropout(x, 0.5).numpy()
    with nn.init.use_generator(engine.Generator().manual_seed(3)):
        second = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, second)
