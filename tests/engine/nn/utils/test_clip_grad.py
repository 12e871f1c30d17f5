"""engine/nn/utils.py: clip_grad_norm_, clip_grad_value_, parameters_to_vector and
vector_to_parameters, by formula and against torch.nn.utils."""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import nn


def _model_with_grads(module, dtype):
    model = module.nn.Sequential(module.nn.Linear(3, 4), module.nn.Tanh(), module.nn.Linear(4, 2)).to(dtype)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data = module.tensor(rng.standard_normal(tuple(p.shape)), dtype=dtype)
        p.grad = module.tensor(rng.standard_normal(tuple(p.shape)) * 3, dtype=dtype)
    return model


def test_clip_grad_norm_scales_to_max_norm_and_returns_the_norm_before():
    model = _model_with_grads(engine, engine.float64)
    before = math.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for p in model.parameters()))
    total = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.5)
    assert total.item() == pytest.approx(before, rel=1e-12)
    after = math.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for p in model.parameters()))
    assert after == pytest.approx(1.5, rel=1e-5)
    unchanged = [p.grad.numpy().copy() for p in model.parameters()]
    nn.utils.clip_grad_norm_(model.parameters(), max_norm=100.0)
    for p, g in zip(model.parameters(), unchanged):
        np.testing.assert_array_equal(p.grad.numpy(), g)


def test_vector_round_trip():
    model = _model_with_grads(engine, engine.float64)
    vec = nn.utils.parameters_to_vector(model.parameters())
    assert tuple(vec.shape) == (3 * 4 + 4 + 4 * 2 + 2,)
    nn.utils.vector_to_parameters(vec * 2, model.parameters())
    np.testing.assert_allclose(nn.utils.parameters_to_vector(model.parameters()).detach().numpy(),
                               vec.detach().numpy() * 2)


@pytest.mark.torch
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_matches_torch(torch, norm_type):
    ours, theirs = _model_with_grads(engine, engine.float32), _model_with_grads(torch, torch.float32)
    a = nn.utils.clip_grad_norm_(ours.parameters(), 0.7, norm_type=norm_type)
    b = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.7, norm_type=norm_type)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-6)
    nn.utils.clip_grad_value_(ours.parameters(), 0.01)
    torch.nn.utils.clip_grad_value_(theirs.parameters(), 0.01)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(nn.utils.parameters_to_vector(ours.parameters()).detach().numpy(),
                               torch.nn.utils.parameters_to_vector(theirs.parameters()).detach().numpy())
