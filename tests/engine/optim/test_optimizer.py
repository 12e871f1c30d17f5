"""engine/optim/optimizer.py, the Optimizer base: zero_grad, parameters without grad, version
bumps, parameter groups, state dicts, closures, argument checks and the repr."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import optim
from tests.engine.optim.histories import problem


def make_param(values=(1.0, 2.0, 3.0)):
    return engine.nn.Parameter(engine.tensor(list(values)))


def test_zero_grad_default_drops_grads_and_false_zeroes_in_place():
    p = make_param()
    opt = optim.SGD([p], lr=0.1)
    (p * p).sum().backward()
    grad = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad
    np.testing.assert_array_equal(p.grad.numpy(), np.zeros(3, np.float32))
    opt.zero_grad()
    assert p.grad is None


def test_parameters_without_grad_are_skipped():
    p, q = make_param(), make_param()
    opt = optim.Adam([p, q], lr=0.1)
    p.grad = engine.ones(3)
    opt.step()
    np.testing.assert_array_equal(q.detach().numpy(), [1.0, 2.0, 3.0])
    assert q not in opt.state and p in opt.state
    assert not np.array_equal(p.detach().numpy(), [1.0, 2.0, 3.0])


def test_step_bumps_the_version_so_a_stale_graph_refuses_backward():
    p = make_param()
    opt = optim.SGD([p], lr=0.1)
    loss = (p * p).sum()  # MulBackward0 saved p
    p.grad = engine.ones(3)
    version = p._version
    opt.step()
    assert p._version == version + 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_param_groups_have_their_own_hyperparameters():
    p, q = make_param(), make_param()
    opt = optim.SGD([{"params": [p]}, {"params": [q], "lr": 1.0}], lr=0.1)
    p.grad, q.grad = engine.ones(3), engine.ones(3)
    opt.step()
    np.testing.assert_allclose(p.detach().numpy(), [0.9, 1.9, 2.9], rtol=1e-6)
    np.testing.assert_allclose(q.detach().numpy(), [0.0, 1.0, 2.0], atol=1e-6)
    assert opt.param_groups[1]["momentum"] == 0.0  # defaults fill the group


def test_state_dict_round_trip_continues_identically():
    weights, grads = problem()
    first = [engine.nn.Parameter(engine.tensor(w)) for w in weights]
    opt = optim.Adam(first, lr=0.01, amsgrad=True)
    for step_grads in grads[:5]:
        for p, g in zip(first, step_grads):
            p.grad = engine.tensor(g)
        opt.step()
    saved = opt.state_dict()
    assert sorted(saved["state"]) == [0, 1] and saved["param_groups"][0]["params"] == [0, 1]
    second = [engine.nn.Parameter(engine.tensor(p.detach().numpy())) for p in first]
    opt2 = optim.Adam(second, lr=0.5)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == 0.01
    for step_grads in grads[5:10]:
        for params, optimizer in ((first, opt), (second, opt2)):
            for p, g in zip(params, step_grads):
                p.grad = engine.tensor(g)
            optimizer.step()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_closure_is_evaluated_with_grad_enabled():
    p = make_param()
    opt = optim.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with engine.no_grad():
        loss = opt.step(closure)
    assert loss.item() == pytest.approx(14.0)
    np.testing.assert_allclose(p.detach().numpy(), [0.8, 1.6, 2.4], rtol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: optim.SGD([], lr=0.1), "empty parameter list"),
        (lambda p: optim.SGD([p], lr=-1.0), "Invalid learning rate"),
        (lambda p: optim.SGD([p], lr=0.1, nesterov=True), "Nesterov"),
        (lambda p: optim.Adam([p], betas=(1.0, 0.9)), "Invalid beta parameter at index 0"),
        (lambda p: optim.SGD([p, p], lr=0.1), "duplicate parameters"),
        (lambda p: optim.SGD([p * 2], lr=0.1), "non-leaf"),
    ],
)
def test_invalid_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make(make_param())


def test_repr_lists_groups():
    opt = optim.SGD([make_param()], lr=0.1, momentum=0.9)
    text = repr(opt)
    assert text.startswith("SGD (\nParameter Group 0") and "momentum: 0.9" in text and "lr: 0.1" in text
