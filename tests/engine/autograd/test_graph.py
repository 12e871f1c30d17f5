"""The recorded graph (engine/autograd/graph.py) from a tensor's side: which tensors are leaves,
who may change ``requires_grad``, and ``detach``, which leaves the graph but keeps memory and version."""

from __future__ import annotations

import pytest

import engine
from tests.engine.autograd.leaves import leaf


def test_requires_grad_only_settable_on_leaves():
    x = leaf([1.0])
    y = x * 2
    with pytest.raises(RuntimeError, match="you can only change requires_grad flags of leaf variables"):
        y.requires_grad = False


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(RuntimeError, match="floating point"):
        engine.tensor([1, 2]).requires_grad_()


def test_detach_shares_memory_and_version_but_not_history():
    x = leaf([1.0, 2.0])
    y = x * 2
    d = y.detach()
    assert d.grad_fn is None and not d.requires_grad and d.is_leaf
    d[0] = 7.0  # in no graph: allowed, and visible through y
    assert y[0].item() == 7.0
    assert y._version == d._version == 1


def test_detach_in_place():
    x = leaf([1.0])
    y = x * 2
    assert y.detach_() is y
    assert y.grad_fn is None and not y.requires_grad
