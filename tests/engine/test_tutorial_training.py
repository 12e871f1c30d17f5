"""The tutorial's training section: TinyModel, one SGD step, accumulation, zero_grad."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import engine
import engine as torch
from tests.floats import assert_within_ulps

BATCH_SIZE, DIM_IN, HIDDEN_SIZE, DIM_OUT = 16, 1000, 100, 10


class TinyModel(torch.nn.Module):
    def __init__(self):
        super(TinyModel, self).__init__()  # noqa: UP008 - as the tutorial writes it
        self.layer1 = torch.nn.Linear(DIM_IN, HIDDEN_SIZE)
        self.relu = torch.nn.ReLU()
        self.layer2 = torch.nn.Linear(HIDDEN_SIZE, DIM_OUT)

    def forward(self, x):
        x = self.layer1(x)
        x = self.relu(x)
        x = self.layer2(x)
        return x


@pytest.fixture
def setup():
    some_input = torch.randn(BATCH_SIZE, DIM_IN, requires_grad=False)
    ideal_output = torch.randn(BATCH_SIZE, DIM_OUT, requires_grad=False)
    model = TinyModel()
    return model, some_input, ideal_output


def reference_grads(model, x, target):
    """The loss gradients of layer2.weight, written by hand in float64."""
    x = x.numpy().astype(np.float64)
    w1, b1 = (p.detach().numpy().astype(np.float64) for p in (model.layer1.weight, model.layer1.bias))
    w2, b2 = (p.detach().numpy().astype(np.float64) for p in (model.layer2.weight, model.layer2.bias))
    hidden = x @ w1.T + b1
    active = np.maximum(hidden, 0)
    prediction = active @ w2.T + b2
    g_prediction = -2 * (target.numpy() - prediction)
    return g_prediction.T @ active


def test_weights_have_no_grad_before_backward(setup):
    model, _, _ = setup
    sliced = model.layer2.weight[0][0:10]
    assert sliced.shape == (10,)
    assert sliced.grad_fn.name() == "SliceBackward0"
    assert model.layer2.weight.grad is None
    assert model.layer2.weight.requires_grad and model.layer2.weight.is_leaf


def test_model_structure_and_parameters(setup):
    model, _, _ = setup
    assert [n for n, _ in model.named_parameters()] == ["layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"]
    assert tuple(model.layer1.weight.shape) == (HIDDEN_SIZE, DIM_IN)
    assert repr(model) == (
        "TinyModel(\n"
        "  (layer1): Linear(in_features=1000, out_features=100, bias=True)\n"
        "  (relu): ReLU()\n"
        "  (layer2): Linear(in_features=100, out_features=10, bias=True)\n"
        ")"
    )


def test_backward_fills_grads_and_leaves_weights(setup):
    model, some_input, ideal_output = setup
    before = model.layer2.weight.detach().numpy().copy()
    prediction = model(some_input)
    loss = (ideal_output - prediction).pow(2).sum()
    assert loss.grad_fn.name() == "SumBackward0"
    loss.backward()
    np.testing.assert_array_equal(model.layer2.weight.detach().numpy(), before)
    grad = model.layer2.weight.grad.numpy()
    np.testing.assert_allclose(grad, reference_grads(model, some_input, ideal_output), rtol=1e-4, atol=1e-4)
    assert all(p.grad is not None for p in model.parameters())


def test_step_moves_weights_by_minus_lr_grad(setup):
    model, some_input, ideal_output = setup
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    loss = (ideal_output - model(some_input)).pow(2).sum()
    loss.backward()
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    optimizer.step()
    lr = np.float64(np.float32(0.001))  # the update runs in float32, lr rounded to it
    for name, param in model.named_parameters():
        # The exact w - lr * g (in float64 the product of two float32 numbers is exact). The BLAS
        # kernel may fuse the multiply-add or round the product first: within one ulp of |w| + |lr g|.
        exact = before[name].astype(np.float64) - lr * grads[name].astype(np.float64)
        assert_within_ulps(param.detach().numpy(), exact, 1, scale=np.abs(before[name]) + np.abs(lr * grads[name]),
                           err_msg=name)
        np.testing.assert_array_equal(param.grad.numpy(), grads[name])  # step leaves grads alone


def test_grads_accumulate_then_zero_grad_leaves_zeros(setup):
    model, some_input, ideal_output = setup
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    (ideal_output - model(some_input)).pow(2).sum().backward()
    optimizer.step()
    first = model.layer2.weight.grad.numpy().copy()
    expected = first.astype(np.float64)
    for _ in range(5):
        prediction = model(some_input)
        loss = (ideal_output - prediction).pow(2).sum()
        loss.backward()
        expected += reference_grads(model, some_input, ideal_output)
    np.testing.assert_allclose(model.layer2.weight.grad.numpy(), expected, rtol=1e-4, atol=1e-3)
    grad_tensor = model.layer2.weight.grad
    optimizer.zero_grad(set_to_none=False)
    assert model.layer2.weight.grad is grad_tensor  # zeroed in place, not replaced
    np.testing.assert_array_equal(model.layer2.weight.grad[0][0:10].numpy(), np.zeros(10, np.float32))
    optimizer.zero_grad()
    assert model.layer2.weight.grad is None


def test_loss_decreases_on_a_fixed_batch(setup):
    model, some_input, ideal_output = setup
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = (ideal_output - model(some_input)).pow(2).sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(b < a for a, b in itertools.pairwise(losses))


def test_matches_pytorch_step_for_step(setup, torch):
    model, some_input, ideal_output = setup
    theirs = torch.nn.Sequential(torch.nn.Linear(DIM_IN, HIDDEN_SIZE), torch.nn.ReLU(),
                                 torch.nn.Linear(HIDDEN_SIZE, DIM_OUT))
    with torch.no_grad():
        for mine, other in zip(model.parameters(), theirs.parameters()):
            other.copy_(torch.from_numpy(mine.detach().numpy()))
    x, target = torch.from_numpy(some_input.numpy()), torch.from_numpy(ideal_output.numpy())
    ours_opt = engine.optim.SGD(model.parameters(), lr=0.001)
    their_opt = torch.optim.SGD(theirs.parameters(), lr=0.001)
    for _ in range(3):
        ours_opt.zero_grad()
        loss = (ideal_output - model(some_input)).pow(2).sum()
        loss.backward()
        ours_opt.step()
        their_opt.zero_grad()
        their_loss = (target - theirs(x)).pow(2).sum()
        their_loss.backward()
        their_opt.step()
        assert loss.item() == pytest.approx(their_loss.item(), rel=1e-4)
    for mine, other in zip(model.parameters(), theirs.parameters()):
        np.testing.assert_allclose(mine.detach().numpy(), other.detach().numpy(), rtol=1e-4, atol=1e-5)
