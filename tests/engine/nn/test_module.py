"""engine/nn/module.py: Parameter and Module bookkeeping (registration order, traversal,
train/eval, state dicts, zero_grad, dtype casts), reprs, deepcopy and pickle."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import engine
from engine import nn


@pytest.mark.host_only
def test_parameter_is_a_leaf_tensor_that_requires_grad_and_shares_memory():
    data = engine.tensor([1.0, 2.0])
    p = nn.Parameter(data)
    assert isinstance(p, engine.Tensor) and p.requires_grad and p.is_leaf
    data.add_(1.0)
    np.testing.assert_array_equal(p.detach().numpy(), [2.0, 3.0])
    assert repr(p) == "Parameter containing:\ntensor([2., 3.], requires_grad=True)"
    assert not nn.Parameter(engine.ones(2), requires_grad=False).requires_grad
    assert type(p * 2) is engine.Tensor


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(3, 4)
        self.scale = nn.Parameter(engine.ones(4))
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(self.inner(x)) * self.scale


def test_registration_order_names_and_traversal():
    model = nn.Sequential(Block(), nn.ReLU(), nn.Linear(4, 2))
    names = [n for n, _ in model.named_parameters()]
    # PyTorch's order: a module's own parameters, then its children's.
    assert names == ["0.scale", "0.inner.weight", "0.inner.bias", "2.weight", "2.bias"]
    assert len(list(model.parameters())) == 5
    assert [type(m).__name__ for m in model.children()] == ["Block", "ReLU", "Linear"]
    assert [n for n, _ in model.named_modules()] == ["", "0", "0.inner", "0.act", "1", "2"]
    assert isinstance(model[2], nn.Linear) and len(model) == 3
    assert model(engine.randn(5, 3)).shape == (5, 2)


def test_assigning_none_and_deleting_unregister():
    layer = nn.Linear(2, 2)
    layer.bias = None
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    assert layer(engine.ones(1, 2)).shape == (1, 2)
    with pytest.raises(TypeError, match="Parameter or None expected"):
        layer.weight = engine.ones(2, 2)
    del layer.weight
    assert list(layer.parameters()) == []


def test_shared_parameters_are_listed_once():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, shared)
    assert len(list(model.parameters())) == 2


def test_train_eval_reach_every_submodule():
    model = nn.Sequential(nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.1)))
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_state_dict_and_load_state_dict():
    engine.manual_seed(1)
    a = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    b = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    state = a.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert not state["0.weight"].requires_grad
    result = b.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
        assert q.requires_grad
    partial = {k: v for k, v in state.items() if k != "2.bias"}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "2\.bias"'):
        b.load_state_dict(partial)
    assert b.load_state_dict(partial, strict=False).missing_keys == ["2.bias"]
    with pytest.raises(RuntimeError, match=r"size mismatch for 0\.weight"):
        b.load_state_dict({**state, "0.weight": engine.zeros(2, 2)})


def test_module_zero_grad_and_double():
    model = nn.Linear(3, 2)
    model(engine.ones(1, 3)).sum().backward()
    model.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(model.weight.grad.numpy(), np.zeros((2, 3), np.float32))
    model.zero_grad()
    assert model.weight.grad is None
    model.double()
    assert model.weight.dtype == engine.float64 and isinstance(model.weight, nn.Parameter)
    assert model(engine.ones(1, 3, dtype=engine.float64)).dtype == engine.float64


def test_repr_matches_pytorch_layout():
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.GELU(), nn.Dropout(0.2), nn.Softmax(dim=-1))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=4, out_features=3, bias=False)\n"
        "  (1): GELU(approximate='none')\n"
        "  (2): Dropout(p=0.2, inplace=False)\n"
        "  (3): Softmax(dim=-1)\n"
        ")"
    )


def test_repr_equals_pytorch(torch):
    ours = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.Flatten(), nn.Identity())
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Tanh(), torch.nn.Sigmoid(),
                                 torch.nn.Flatten(), torch.nn.Identity())
    assert repr(ours) == repr(theirs)


def test_deepcopy_and_pickle_keep_parameters_registered():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        weight = clone[0].weight
        assert isinstance(weight, nn.Parameter) and weight is not model[0].weight
        assert weight is dict(clone.named_parameters())["0.weight"]
        np.testing.assert_array_equal(weight.detach().numpy(), model[0].weight.detach().numpy())
