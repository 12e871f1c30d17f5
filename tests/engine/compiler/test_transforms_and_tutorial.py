"""Compiled functions through every functional transform, and the tutorial's programs compiled.

The transforms (``engine.autograd.functional`` and ``engine.func``) call the
function and differentiate what it returns; given a compiled function they
must give what they give for the plain one. Batched cotangents and
``create_graph=True`` reach a compiled node's backward, which runs the plan
again on Tensors there, so these tests also hold that path to eager.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
import engine as torch
from engine.autograd import functional as F
from tests.engine.test_tutorial_training import TinyModel, reference_grads

RTOL, ATOL = 1e-10, 1e-12


def exp_adder(x, y):
    return 2 * x.exp() + 3 * y


def cubic(x):
    return (x.sin() * x**2).sum() + (x * x * x).sum()


def vector_field(x):
    return engine.tanh(x * 2.0) * x.sum()


def _inputs(seed=0, n=3):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, n), rng.uniform(-1.0, 1.0, n)


def _tensor(values):
    return engine.tensor(values, dtype=engine.float64)


def _assert_same(got, expected):
    if isinstance(expected, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(expected)
        for g, e in zip(got, expected):
            _assert_same(g, e)
        return
    np.testing.assert_allclose(got.detach().numpy(), expected.detach().numpy(), rtol=RTOL, atol=ATOL)


TRANSFORMS = {
    "jacobian": lambda f, x, y, v: F.jacobian(f, (x, y)),
    "jacobian-forward": lambda f, x, y, v: F.jacobian(f, (x, y), strategy="forward-mode", vectorize=True),
    "jacobian-unvectorized": lambda f, x, y, v: F.jacobian(f, (x, y), vectorize=False),
    "vjp": lambda f, x, y, v: F.vjp(f, (x, y), v),
    "jvp": lambda f, x, y, v: F.jvp(f, (x, y), (v, v)),
}
SCALAR_TRANSFORMS = {
    "hessian": lambda f, x, v: F.hessian(f, x),
    "hessian-create-graph": lambda f, x, v: F.hessian(f, x, create_graph=True),
    "hvp": lambda f, x, v: F.hvp(f, x, v),
    "vhp": lambda f, x, v: F.vhp(f, x, v),
    "func.grad": lambda f, x, v: engine.func.grad(f)(x),
    "func.jacrev": lambda f, x, v: engine.func.jacrev(f)(x),
    "func.jacfwd": lambda f, x, v: engine.func.jacfwd(f)(x),
    "func.hessian": lambda f, x, v: engine.func.hessian(f)(x),
    "func.grad(func.grad)": lambda f, x, v: engine.func.grad(lambda t: engine.func.grad(f)(t).sum())(x),
}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transforms_of_a_compiled_function_equal_the_plain_ones(name):
    transform = TRANSFORMS[name]
    compiled = engine.compile(exp_adder)
    for seed in range(3):
        x_data, y_data = _inputs(seed)
        v = _tensor(np.linspace(-1.0, 1.0, 3))
        expected = transform(exp_adder, _tensor(x_data), _tensor(y_data), v)
        got = transform(compiled, _tensor(x_data), _tensor(y_data), v)
        _assert_same(got, expected)


@pytest.mark.parametrize("name", SCALAR_TRANSFORMS)
def test_second_order_transforms_of_a_compiled_function_equal_the_plain_ones(name):
    transform = SCALAR_TRANSFORMS[name]
    compiled = engine.compile(cubic)
    for seed in range(3):
        x_data, v_data = _inputs(seed, 4)
        expected = transform(cubic, _tensor(x_data), _tensor(v_data))
        got = transform(compiled, _tensor(x_data), _tensor(v_data))
        _assert_same(got, expected)
    # the closed form of the Hessian: diag((2 - x^2) sin x + 4 x cos x + 6 x)
    x_data, _ = _inputs(0, 4)
    if name == "hessian":
        expected = np.diag((2 - x_data**2) * np.sin(x_data) + 4 * x_data * np.cos(x_data) + 6 * x_data)
        np.testing.assert_allclose(F.hessian(compiled, _tensor(x_data)).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_vector_jacobian_of_a_compiled_function_replays_the_forward():
    compiled = engine.compile(vector_field)
    for seed in range(3):
        x_data, _ = _inputs(seed, 5)
        np.testing.assert_allclose(F.jacobian(compiled, _tensor(x_data)).numpy(),
                                   F.jacobian(vector_field, _tensor(x_data)).numpy(), rtol=RTOL, atol=ATOL)
    assert "replayed" in [record.kind for record in compiled.history]


# ---- the tutorial's programs, compiled -------------------------------------------------------------------


def test_tutorial_first_cell_compiled():
    @torch.compile
    def first_cell(a):
        b = torch.sin(a)
        c = 2 * b
        d = c + 1
        return d.sum()

    for stop in (2.0, 3.0):
        a = torch.linspace(0.0, stop * 3.14159, steps=25, requires_grad=True)
        out = first_cell(a)
        out.backward()
        np.testing.assert_allclose(a.grad.numpy(), 2 * np.cos(a.detach().numpy()), rtol=1e-5, atol=1e-6)
    assert first_cell.last_call.kind == "replayed"


def test_tutorial_doubling_loop_with_vector_backward_compiled():
    @torch.compile
    def doubling(x):
        y = x * 2
        while y.data.norm() < 1000:
            y = y * 2
        return y

    v = torch.tensor([0.1, 1.0, 0.0001], dtype=torch.float32)
    for values in ([0.3, -1.1, 2.0], [3.0, -11.0, 20.0], [0.25, -1.2, 1.9]):
        x = torch.tensor(values, requires_grad=True)
        y = doubling(x)
        y.backward(v)
        factor = (y.detach().numpy() / x.detach().numpy())[0]
        assert factor in (512.0, 1024.0, 64.0, 128.0)
        np.testing.assert_allclose(x.grad.numpy(), factor * v.numpy(), rtol=1e-6)


def test_tutorial_exp_adder_jacobian_compiled():
    compiled = torch.compile(exp_adder)
    inputs = (torch.rand(3), torch.rand(3))
    jx, jy = F.jacobian(compiled, inputs)
    np.testing.assert_allclose(jx.numpy(), np.diag(2 * np.exp(inputs[0].numpy())), rtol=1e-6)
    np.testing.assert_allclose(jy.numpy(), 3 * np.eye(3), rtol=1e-6)


def test_tutorial_tiny_model_training_step_compiled():
    torch.manual_seed(0)
    x = torch.randn(16, 1000)
    target = torch.randn(16, 10)
    model = TinyModel()
    compiled = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    for step in range(3):
        optimizer.zero_grad()
        prediction = compiled(x)
        loss = (target - prediction).pow(2).sum()
        loss.backward()
        np.testing.assert_allclose(model.layer2.weight.grad.numpy(), reference_grads(model, x, target),
                                   rtol=2e-3, atol=2e-3)
        optimizer.step()
        if step:
            assert type(prediction.grad_fn).__name__ == "CompiledFunctionBackward"
    assert [r.kind for r in compiled.history] == ["recompiled", "replayed", "replayed"]
