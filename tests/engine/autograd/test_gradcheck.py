"""gradcheck and gradgradcheck (engine/autograd/gradcheck.py): they pass on a correct composite,
catch a wrong gradient, and warn about float32 inputs."""

from __future__ import annotations

import pytest

import engine
from engine.autograd import gradcheck, gradgradcheck
from tests.engine.autograd.leaves import leaf


def test_gradcheck_and_gradgradcheck_on_composite():
    x = leaf([[0.2, -0.4], [0.9, 1.3]])
    w = leaf([0.5, -0.3])

    def f(x, w):
        return (x @ w).tanh().exp() * (x.softmax(-1) * w).sum(-1)

    assert gradcheck(f, (x, w))
    assert gradgradcheck(f, (x, w))


def test_gradcheck_catches_a_wrong_gradient():
    x = leaf([0.5, 1.5])
    assert not gradcheck(lambda t: t * t.detach(), (x,), raise_exception=False)
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        gradcheck(lambda t: t * t.detach(), (x,))


def test_gradcheck_warns_for_float32_inputs():
    x = engine.tensor([0.5, 1.0], requires_grad=True)
    with pytest.warns(UserWarning, match="double precision"):
        gradcheck(lambda t: t * 2, (x,), atol=1e-2, rtol=1e-2, eps=1e-3)
