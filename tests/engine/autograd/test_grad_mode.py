"""Grad modes (engine/autograd/grad_mode.py): no_grad, enable_grad, set_grad_enabled and
inference_mode, as context managers and as decorators."""

from __future__ import annotations

import engine
from tests.engine.autograd.leaves import leaf


def test_no_grad_enable_grad_and_set_grad_enabled():
    x = leaf([1.0])
    with engine.no_grad():
        assert not (x * 2).requires_grad
        with engine.enable_grad():
            assert (x * 2).requires_grad
        assert not engine.is_grad_enabled()
    assert engine.is_grad_enabled()
    engine.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        engine.set_grad_enabled(True)
    with engine.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad


def test_grad_modes_as_decorators():
    x = leaf([1.0])

    @engine.no_grad()
    def off():
        return x * 2

    @engine.enable_grad()
    def on():
        return x * 2

    assert not off().requires_grad
    with engine.no_grad():
        assert on().requires_grad
    assert engine.is_grad_enabled()


def test_inference_mode():
    x = leaf([1.0])
    with engine.inference_mode():
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad
