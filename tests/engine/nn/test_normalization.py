"""engine/nn/normalization.py: BatchNorm1d/2d (batch statistics while training, running statistics,
momentum, num_batches_tracked, eval mode) and LayerNorm, by numpy formulas and against torch.nn."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import nn


def test_batch_norm_training_standardizes_and_updates_running_stats_by_formula():
    bn = nn.BatchNorm2d(3, momentum=0.25, dtype=engine.float64)
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 5)) * 3 + 1
    out = bn(engine.tensor(x)).detach().numpy()
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    expected = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    n = 4 * 2 * 5
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.25 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.75 + 0.25 * var * n / (n - 1), rtol=1e-12)
    assert bn.num_batches_tracked.item() == 1 and bn.num_batches_tracked.dtype == engine.int64
    bn.eval()
    again = bn(engine.tensor(x)).detach().numpy()
    expected_eval = (x - bn.running_mean.numpy()[None, :, None, None]) / np.sqrt(
        bn.running_var.numpy()[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(again, expected_eval, rtol=1e-10, atol=1e-12)
    assert bn.num_batches_tracked.item() == 1  # eval mode leaves the statistics alone


def test_buffers_and_parameters_are_pytorchs():
    bn = nn.BatchNorm1d(4)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert list(nn.BatchNorm1d(4, affine=False, track_running_stats=False).state_dict()) == []
    with pytest.raises(ValueError, match="expected 4D input"):
        nn.BatchNorm2d(3)(engine.zeros(2, 3, 4))


@pytest.mark.torch
@pytest.mark.parametrize("kind, args, kwargs, shape", [
    ("BatchNorm1d", (3,), {}, (5, 3)),
    ("BatchNorm1d", (3,), {"bias": False}, (5, 3)),
    ("BatchNorm1d", (3,), {"momentum": None, "eps": 1e-3}, (4, 3, 6)),
    ("BatchNorm2d", (2,), {"affine": False}, (3, 2, 4, 4)),
    ("BatchNorm2d", (2,), {"track_running_stats": False}, (3, 2, 4, 4)),
    ("LayerNorm", ((4,),), {}, (3, 5, 4)),
    ("LayerNorm", ((2, 3),), {"elementwise_affine": False, "eps": 1e-3}, (4, 2, 3)),
    ("LayerNorm", (3,), {"bias": False}, (2, 3)),
])
def test_training_steps_then_eval_match_torch_nn(torch, kind, args, kwargs, shape):
    theirs = getattr(torch.nn, kind)(*args, **kwargs).double()
    ours = getattr(nn, kind)(*args, **kwargs, dtype=engine.float64)
    assert repr(ours) == repr(theirs)
    rng = np.random.default_rng(4)
    for mode in ("train", "train", "train", "eval"):
        getattr(theirs, mode)(), getattr(ours, mode)()
        for p in (*ours.parameters(), *theirs.parameters()):
            p.grad = None
        x = rng.standard_normal(shape) * 2 + 0.5
        tx, ex = torch.tensor(x, requires_grad=True), engine.tensor(x, requires_grad=True)
        t_out, e_out = theirs(tx), ours(ex)
        assert e_out.grad_fn.name() == t_out.grad_fn.name()
        (t_out.sin() * t_out).sum().backward()
        (e_out.sin() * e_out).sum().backward()
        np.testing.assert_allclose(e_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ex.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
        for (name, b), (_, c) in zip(ours.named_buffers(), theirs.named_buffers()):
            np.testing.assert_allclose(b.numpy(), c.numpy(), rtol=1e-12, err_msg=name)
