"""engine/nn/convolution.py: Conv1d and Conv2d: shapes, PyTorch's init bounds and reprs, values and
gradients against torch.nn with the same weights, and gradcheck in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine import nn
from engine.autograd import gradcheck


def test_parameters_have_pytorchs_shapes_and_init_bounds():
    engine.manual_seed(0)
    conv = nn.Conv2d(6, 8, (3, 5), groups=2)
    assert [name for name, _ in conv.named_parameters()] == ["weight", "bias"]
    assert tuple(conv.weight.shape) == (8, 3, 3, 5) and tuple(conv.bias.shape) == (8,)
    bound = 1 / math.sqrt(3 * 3 * 5)  # fan_in = in_channels / groups * kernel elements
    for p in (conv.weight, conv.bias):
        values = p.detach().numpy()
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.8 * bound  # drawn across the range, not a constant
    assert nn.Conv1d(2, 3, 4, bias=False).bias is None


def test_invalid_arguments_raise_as_pytorch():
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(NotImplementedError, match="padding_mode"):
        nn.Conv2d(3, 4, 3, padding_mode="reflect")


def test_conv2d_gradcheck_in_float64():
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=engine.float64)
    x = engine.randn(2, 2, 5, 4, dtype=engine.float64, requires_grad=True)
    assert gradcheck(lambda x, w, b: nn.functional.conv2d(x, w, b, stride=2, padding=1),
                     (x, conv.weight, conv.bias))


@pytest.mark.torch
@pytest.mark.parametrize("kind, args, kwargs, shape", [
    ("Conv2d", (3, 4, 3), {}, (2, 3, 6, 6)),
    ("Conv2d", (4, 6, (3, 2)), {"stride": 2, "padding": 1, "groups": 2, "bias": False}, (2, 4, 7, 6)),
    ("Conv2d", (2, 2, 3), {"padding": "same", "dilation": 2}, (1, 2, 6, 6)),
    ("Conv1d", (3, 5, 3), {"padding": "valid", "stride": 2}, (4, 3, 9)),
    ("Conv1d", (2, 4, 2), {"padding": 1}, (2, 7)),  # unbatched
])
def test_modules_match_torch_nn(torch, kind, args, kwargs, shape):
    theirs = getattr(torch.nn, kind)(*args, **kwargs).double()
    ours = getattr(nn, kind)(*args, **kwargs, dtype=engine.float64)
    assert repr(ours) == repr(theirs)
    ours.load_state_dict({k: engine.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal(shape)
    tx, ex = torch.tensor(x, requires_grad=True), engine.tensor(x, requires_grad=True)
    t_out, e_out = theirs(tx), ours(ex)
    g = np.random.default_rng(1).standard_normal(tuple(t_out.shape))
    t_out.backward(torch.tensor(g))
    e_out.backward(engine.tensor(g))
    np.testing.assert_allclose(e_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ex.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
