"""The legacy ``Variable`` (engine/autograd/variable.py): a Tensor, as PyTorch keeps it."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.autograd import Variable


def test_variable_is_a_new_leaf_on_the_same_data_and_honours_requires_grad():
    data = engine.tensor([1.0, 2.0])
    v = Variable(data, requires_grad=True)
    assert isinstance(v, engine.Tensor) and v is not data and v.is_leaf and v.requires_grad
    assert not data.requires_grad
    (v * v).sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), [2.0, 4.0])
    data[0] = 5.0  # same memory
    assert v[0].item() == 5.0
    plain = Variable(data)
    assert not plain.requires_grad and isinstance(data, Variable)


def test_variable_of_non_tensor_data_raises_pytorchs_error():
    with pytest.raises(TypeError, match="Variable data has to be a tensor, but got list"):
        Variable([1.0, 2.0])


def test_same_behaviour_as_pytorch(torch):
    found = []
    for lib in (engine, torch):
        data = lib.tensor([3.0])
        v = lib.autograd.Variable(data, requires_grad=True)
        found.append((v is data, v.requires_grad, v.is_leaf, isinstance(data, lib.autograd.Variable)))
    assert found[0] == found[1]
