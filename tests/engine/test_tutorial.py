"""The tutorial's engine cells, run with ``import engine as torch`` semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine as torch


def sin_example():
    a = torch.linspace(0.0, 2.0 * math.pi, steps=25, requires_grad=True)
    b = torch.sin(a)
    c = 2 * b
    d = c + 1
    out = d.sum()
    return a, b, c, d, out


def test_sin_example_gradient_is_two_cos():
    a, _, _, _, out = sin_example()
    out.backward()
    expected = 2 * np.cos(a.detach().numpy().astype(np.float64))
    np.testing.assert_allclose(a.grad.numpy(), expected, atol=2e-6)
    assert out.item() == pytest.approx(25.0, abs=1e-4)


def test_sin_example_graph_matches_tutorial_printout():
    a, b, c, d, out = sin_example()
    assert repr(d.grad_fn).startswith("<AddBackward0 object at 0x")
    mul, const = d.grad_fn.next_functions
    assert const == (None, 0)
    assert mul[1] == 0 and mul[0].name() == "MulBackward0"
    sin_node, const = mul[0].next_functions
    assert const == (None, 0) and sin_node[0].name() == "SinBackward0"
    (leaf,) = sin_node[0].next_functions
    assert leaf[0].name() == "AccumulateGrad" and leaf[0].variable is a
    assert leaf[0].next_functions == ()
    assert out.grad_fn.name() == "SumBackward0"
    assert a.grad_fn is None and b.grad_fn.name() == "SinBackward0" and c.grad_fn.name() == "MulBackward0"


@pytest.mark.host_only
def test_sin_example_reprs():
    a, b, _, _, out = sin_example()
    assert repr(out) == "tensor(25., grad_fn=<SumBackward0>)"
    assert repr(a).endswith("6.2832],\n       requires_grad=True)")
    assert repr(b).splitlines()[0] == "tensor([ 0.0000e+00,  2.5882e-01,  5.0000e-01,  7.0711e-01,  8.6603e-01,"
    assert repr(b).endswith("grad_fn=<SinBackward0>)")


def test_only_leaves_get_grad():
    _, _, c, _, out = sin_example()
    out.backward()
    with pytest.warns(UserWarning, match="not a leaf Tensor"):
        assert c.grad is None


def test_retain_grad_on_intermediate():
    _, _, c, _, out = sin_example()
    c.retain_grad()
    out.backward()
    np.testing.assert_allclose(c.grad.numpy(), np.ones(25))


def test_gradients_accumulate_across_backward_calls():
    a, _, _, _, out = sin_example()
    out.backward(retain_graph=True)
    first = a.grad.numpy().copy()
    out.backward()
    np.testing.assert_allclose(a.grad.numpy(), 2 * first, rtol=1e-6)


@pytest.mark.host_only
def test_requires_grad_toggle():
    a = torch.ones(2, 3, requires_grad=True)
    b1 = 2 * a
    assert b1.grad_fn.name() == "MulBackward0"
    a.requires_grad = False
    b2 = 2 * a
    assert b2.grad_fn is None and not b2.requires_grad
    assert repr(b2) == "tensor([[2., 2., 2.],\n        [2., 2., 2.]])"


def test_requires_grad_only_settable_on_leaves():
    x = torch.ones(3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="only change requires_grad flags of leaf variables"):
        x.requires_grad = False


def test_no_grad_context():
    a = torch.ones(2, 3, requires_grad=True) * 2
    b = torch.ones(2, 3, requires_grad=True) * 3
    c1 = a + b
    with torch.no_grad():
        c2 = a + b
    c3 = a * b
    assert c1.grad_fn.name() == "AddBackward0"
    assert c2.grad_fn is None and not c2.requires_grad
    assert c3.grad_fn.name() == "MulBackward0"
    np.testing.assert_array_equal(c2.numpy(), np.full((2, 3), 5.0))
    np.testing.assert_array_equal(c3.detach().numpy(), np.full((2, 3), 6.0))


def test_no_grad_decorator_and_enable_grad():
    def add_tensors1(x, y):
        return x + y

    @torch.no_grad()
    def add_tensors2(x, y):
        return x + y

    @torch.enable_grad()
    def add_tensors3(x, y):
        return x + y

    a = torch.ones(2, 3, requires_grad=True) * 2
    b = torch.ones(2, 3, requires_grad=True) * 3
    assert add_tensors1(a, b).requires_grad
    assert not add_tensors2(a, b).requires_grad
    with torch.no_grad():
        assert add_tensors3(a, b).requires_grad
        with torch.enable_grad():
            assert (a * b).requires_grad
    assert torch.is_grad_enabled()


def test_set_grad_enabled():
    x = torch.ones(2, requires_grad=True)
    with torch.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad
    torch.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        torch.set_grad_enabled(True)


def test_detach_shares_values_without_history():
    x = torch.rand(5, requires_grad=True)
    y = x.detach()
    assert not y.requires_grad and y.grad_fn is None
    np.testing.assert_array_equal(x.detach().numpy(), y.numpy())
    assert repr(x).endswith("requires_grad=True)") and "requires_grad" not in repr(y)


def test_in_place_on_leaf_raises():
    a = torch.linspace(0.0, 2.0 * math.pi, steps=25, requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place operation"):
        torch.sin_(a)


def do_some_doubling(x):
    y = x * 2
    while y.data.norm() < 1000:
        y = y * 2
    return y


def test_doubling_loop_with_vector_backward():
    x = torch.randn(3, requires_grad=True)
    y = do_some_doubling(x)
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        y.backward()
    v = torch.tensor([0.1, 1.0, 0.0001], dtype=torch.float)
    y.backward(v)
    # y = 2^k x, so x.grad = 2^k v where 2^k = y / x.
    factor = float(y.detach().numpy()[0] / x.detach().numpy()[0])
    assert math.log2(factor) == pytest.approx(round(math.log2(factor)))
    np.testing.assert_allclose(x.grad.numpy(), factor * np.array([0.1, 1.0, 0.0001]), rtol=1e-6)
    assert y.grad_fn.name() == "MulBackward0"


def test_second_backward_through_freed_graph_raises():
    x = torch.randn(3, requires_grad=True)
    y = (x.sin() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_double_backward():
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
    y = (x.sin() * x * x).sum()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    xs = x.detach().numpy()
    np.testing.assert_allclose(g.detach().numpy(), np.cos(xs) * xs**2 + 2 * xs * np.sin(xs), rtol=1e-12)
    expected = -np.sin(xs) * xs**2 + 4 * xs * np.cos(xs) + 2 * np.sin(xs)
    np.testing.assert_allclose(h.numpy(), expected, rtol=1e-12)


def test_third_derivative():
    x = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y = x.exp() * x
    (d1,) = torch.autograd.grad(y, x, create_graph=True)
    (d2,) = torch.autograd.grad(d1, x, create_graph=True)
    (d3,) = torch.autograd.grad(d2, x)
    assert d3.item() == pytest.approx(math.exp(0.7) * (0.7 + 3), rel=1e-12)


def test_cuda_is_reported_unavailable_without_gpu():
    assert torch.cuda.is_available() in (True, False)
    assert torch.device("cpu") == "cpu"
