"""engine/nn/init.py: the initialisers' bounds and spreads, their seeding (``manual_seed`` and
``use_generator``), and Linear's default initialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import nn


def test_linear_default_init_bounds_and_spread():
    layer = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w = layer.weight.detach().numpy()
    b = layer.bias.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.std(w) == pytest.approx(bound / math.sqrt(3), rel=0.02)  # U(-b, b) has std b / sqrt(3)
    assert abs(np.mean(w)) < 0.01 * bound
    assert w.dtype == np.float32


def test_linear_init_is_seeded():
    engine.manual_seed(5)
    first = nn.Linear(10, 3).weight.detach().numpy().copy()
    engine.manual_seed(5)
    np.testing.assert_array_equal(nn.Linear(10, 3).weight.detach().numpy(), first)
    with nn.init.use_generator(engine.Generator().manual_seed(5)):
        np.testing.assert_array_equal(nn.Linear(10, 3).weight.detach().numpy(), first)


def test_init_functions():
    t = engine.empty(200, 300)
    nn.init.xavier_uniform_(t)
    bound = math.sqrt(6 / 500)
    assert np.abs(t.numpy()).max() <= bound
    nn.init.xavier_normal_(t, gain=2.0)
    assert np.std(t.numpy()) == pytest.approx(2.0 * math.sqrt(2 / 500), rel=0.03)
    nn.init.kaiming_normal_(t, nonlinearity="relu")
    assert np.std(t.numpy()) == pytest.approx(math.sqrt(2 / 300), rel=0.03)
    nn.init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu")
    assert np.abs(t.numpy()).max() <= math.sqrt(6 / 200)
    nn.init.normal_(t, 3.0, 0.5)
    assert np.mean(t.numpy()) == pytest.approx(3.0, abs=0.01)
    nn.init.constant_(t, 0.25)
    assert (t.numpy() == 0.25).all()
    nn.init.zeros_(t)
    assert (t.numpy() == 0).all()
    nn.init.ones_(t)
    assert (t.numpy() == 1).all()
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(engine.empty(3))


def test_init_on_a_parameter_keeps_it_a_leaf():
    p = nn.Parameter(engine.empty(3, 3))
    nn.init.uniform_(p, -1, 1)
    assert p.is_leaf and p.grad_fn is None and p.requires_grad
