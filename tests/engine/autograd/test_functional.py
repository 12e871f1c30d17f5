"""engine.autograd.functional: the tutorial's advanced-API cells, analytic formulas,
finite differences, strategy / vectorization / chunking agreement, create_graph,
strict mode and errors, and differential tests against torch.autograd.functional."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import engine as torch
from engine.autograd import functional as F
from tests import finite_differences

f64 = torch.float64


def exp_adder(x, y):
    return 2 * x.exp() + 3 * y


def do_some_doubling(x):
    y = x * 2
    while y.data.norm() < 1000:
        y = y * 2
    return y


# ---- the tutorial's cells ------------------------------------------------------------


def test_tutorial_jacobian_of_exp_adder_one_element():
    inputs = (torch.rand(1), torch.rand(1))
    jx, jy = F.jacobian(exp_adder, inputs)
    assert tuple(jx.shape) == (1, 1) and tuple(jy.shape) == (1, 1)
    assert jx.item() == pytest.approx(2 * np.exp(inputs[0].item()), rel=1e-6)
    assert jy.item() == pytest.approx(3.0)


def test_tutorial_jacobian_of_exp_adder_three_elements():
    inputs = (torch.rand(3), torch.rand(3))
    jx, jy = F.jacobian(exp_adder, inputs)
    np.testing.assert_allclose(jx.numpy(), np.diag(2 * np.exp(inputs[0].numpy())), rtol=1e-6)
    np.testing.assert_allclose(jy.numpy(), 3 * np.eye(3))


def test_tutorial_vjp_of_do_some_doubling():
    x = torch.randn(3)
    v = torch.tensor([0.1, 1.0, 0.0001])
    out, vjp = F.vjp(do_some_doubling, x, v=v)
    scale = out.numpy() / x.numpy()  # 2^k, the same in every entry
    assert np.allclose(scale, scale[0]) and np.log2(scale[0]) == pytest.approx(round(np.log2(scale[0])))
    np.testing.assert_allclose(vjp.numpy(), v.numpy() * scale[0], rtol=1e-6)
    assert not out.requires_grad and not vjp.requires_grad


def test_tutorial_jvp_hvp_vhp():
    x = torch.randn(3)
    v = torch.tensor([0.1, 1.0, 0.0001])
    out, jvp = F.jvp(do_some_doubling, x, v=v)
    np.testing.assert_allclose(jvp.numpy(), v.numpy() * (out.numpy() / x.numpy())[0], rtol=1e-6)

    def pow_reducer(t):
        return t.pow(3).sum()

    xs = torch.rand(2, 2, dtype=f64)
    w = torch.ones(2, 2, dtype=f64)
    _, hvp = F.hvp(pow_reducer, xs, w)
    _, vhp = F.vhp(pow_reducer, xs, w)
    np.testing.assert_allclose(hvp.numpy(), 6 * xs.numpy())
    np.testing.assert_allclose(vhp.numpy(), 6 * xs.numpy())
    h = F.hessian(pow_reducer, xs)
    assert tuple(h.shape) == (2, 2, 2, 2)
    np.testing.assert_allclose(h.numpy().reshape(4, 4), np.diag(6 * xs.numpy().ravel()))


# ---- analytic formulas -----------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["auto", "reverse-mode", "forward-mode"])
@pytest.mark.parametrize("vectorize", [True, False])
def test_jacobian_of_tanh_wx(strategy, vectorize):
    w = torch.randn(5, 4, dtype=f64)
    x = torch.randn(4, dtype=f64)
    jac = F.jacobian(lambda t: torch.tanh(w @ t), x, strategy=strategy, vectorize=vectorize)
    expected = np.diag(1 - np.tanh(w.numpy() @ x.numpy()) ** 2) @ w.numpy()
    np.testing.assert_allclose(jac.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("strategy", ["forward-mode", "reverse-mode"])
def test_hessian_of_a_quadratic_form(strategy):
    a = torch.randn(4, 4, dtype=f64)
    x = torch.randn(4, dtype=f64)
    h = F.hessian(lambda t: t @ a @ t, x, outer_jacobian_strategy=strategy)
    np.testing.assert_allclose(h.numpy(), a.numpy() + a.numpy().T, rtol=1e-12)


def test_hvp_equals_vhp_for_a_symmetric_hessian():
    a = torch.randn(4, 4, dtype=f64)
    x, v = torch.randn(4, dtype=f64), torch.randn(4, dtype=f64)

    def f(t):
        return t @ a @ t + t.sin().sum() * t.sum()

    out_h, hvp = F.hvp(f, x, v)
    out_v, vhp = F.vhp(f, x, v)
    np.testing.assert_allclose(hvp.numpy(), vhp.numpy(), rtol=1e-12)
    np.testing.assert_allclose(hvp.numpy(), F.hessian(f, x).numpy() @ v.numpy(), rtol=1e-12)
    assert out_h.item() == out_v.item()


def test_benchmark_hessian_formula():
    """The benchmark's function: diag(2 sin x + 4 x cos x - x^2 sin x) + 2 A^T A."""
    a = torch.randn(6, 6, dtype=f64)
    x = torch.randn(6, dtype=f64)
    h = F.hessian(lambda t: (torch.sin(t) * t**2).sum() + ((a @ t) ** 2).sum(), x).numpy()
    xn, an = x.numpy(), a.numpy()
    expected = np.diag(2 * np.sin(xn) + 4 * xn * np.cos(xn) - xn**2 * np.sin(xn)) + 2 * an.T @ an
    np.testing.assert_allclose(h, expected, rtol=1e-12, atol=1e-12)


# ---- finite differences, and agreement between the ways of computing ----------------------


def two_by_two(x, y):
    """Two inputs (a matrix and a vector), two outputs (a matrix and a scalar)."""
    return (x * y).tanh() @ y.exp(), (x.sin() ** 2).sum() + y.prod()


def test_jacobian_against_central_differences():
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(-1, 1, (2, 3)), rng.uniform(-1, 1, 3)]
    numeric = finite_differences.jacobian(finite_differences.on_tensors(two_by_two), arrays)
    jac = F.jacobian(two_by_two, tuple(torch.tensor(a) for a in arrays))
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(jac[i][j].numpy(), numeric[i][j], atol=1e-7, err_msg=f"[{i}][{j}]")


def test_hessian_against_differences_of_the_gradient():
    rng = np.random.default_rng(1)
    arrays = [rng.uniform(-1, 1, (2, 2)), rng.uniform(-1, 1, 3)]

    def f(x, y):
        return (x.exp() * x).sum() * y.sin().sum() + (y**3).sum()

    def gradient(x, y):
        with torch.enable_grad():
            x, y = x.detach().requires_grad_(), y.detach().requires_grad_()
            return torch.autograd.grad(f(x, y), (x, y))

    numeric = finite_differences.jacobian(finite_differences.on_tensors(gradient), arrays)
    h = F.hessian(f, tuple(torch.tensor(a) for a in arrays))
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(h[i][j].numpy(), numeric[i][j], atol=1e-7, err_msg=f"[{i}][{j}]")


def _assert_nested_close(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_nested_close(x, y)
    else:
        assert tuple(a.shape) == tuple(b.shape)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 100])
def test_strategies_vectorization_and_chunks_agree(chunk_size):
    inputs = (torch.randn(2, 3, dtype=f64), torch.randn(3, dtype=f64))
    reference = F.jacobian(two_by_two, inputs, strategy="reverse-mode", vectorize=False)
    for strategy in ("reverse-mode", "forward-mode", "auto"):
        _assert_nested_close(F.jacobian(two_by_two, inputs, strategy=strategy, chunk_size=chunk_size), reference)


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 4])
def test_hessian_ways_agree(chunk_size):
    inputs = (torch.randn(2, 2, dtype=f64), torch.randn(3, dtype=f64))

    def f(x, y):
        return (x.exp() * x).sum() * y.sin().sum() + (y**3).sum() + (x.sum(0) * y[:2]).sum()

    reference = F.hessian(f, inputs, outer_jacobian_strategy="reverse-mode", vectorize=False)
    _assert_nested_close(F.hessian(f, inputs, chunk_size=chunk_size), reference)
    _assert_nested_close(F.hessian(f, inputs, vectorize=False), reference)


def test_hessian_rows_independent_of_some_chunks():
    """Chunks that perturb only inputs a gradient does not depend on still give (zero) rows."""
    inputs = (torch.randn(3, dtype=f64), torch.randn(1, dtype=f64))

    def f(x, y):
        return (y**3).sum() + x.sum() * y.sum()

    h = F.hessian(f, inputs, chunk_size=2)
    _assert_nested_close(h, F.hessian(f, inputs, outer_jacobian_strategy="reverse-mode"))


def test_auto_strategy_picks_forward_mode_for_fewer_inputs(monkeypatch):
    calls = []
    original = F._jacobian_forward

    def spy(*args):
        calls.append(True)
        return original(*args)

    monkeypatch.setattr(F, "_jacobian_forward", spy)
    F.jacobian(lambda t: t.outer(t), torch.randn(3))  # 3 inputs, 9 outputs: forward
    assert calls == [True]
    F.jacobian(lambda t: t.sum(), torch.randn(3))  # 3 inputs, 1 output: reverse
    assert calls == [True]


# ---- create_graph ------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["reverse-mode", "forward-mode"])
def test_jacobian_create_graph_is_differentiable(strategy):
    x = torch.randn(3, dtype=f64, requires_grad=True)
    jac = F.jacobian(lambda t: t**3, x, create_graph=True, strategy=strategy)  # diag(3 x^2)
    assert jac.requires_grad
    jac.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.detach().numpy())


def test_hessian_create_graph_is_differentiable():
    x = torch.randn(3, dtype=f64, requires_grad=True)
    h = F.hessian(lambda t: (t**4).sum(), x, create_graph=True)  # diag(12 x^2)
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 24 * x.detach().numpy())


@pytest.mark.parametrize("name", ["vjp", "jvp", "hvp", "vhp"])
def test_products_create_graph_are_differentiable(name):
    x = torch.randn(3, dtype=f64, requires_grad=True)
    v = torch.randn(3, dtype=f64)

    def f(t):
        return (t**4).sum() if name in ("hvp", "vhp") else t**3

    out, product = getattr(F, name)(f, x, v, create_graph=True)
    assert out.requires_grad and product.requires_grad
    product.sum().backward()
    xn, vn = x.detach().numpy(), v.numpy()
    expected = 24 * xn * vn if name in ("hvp", "vhp") else 6 * xn * vn  # d/dx of sum(f'' v) or sum(3 x^2 v)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)


# ---- strict mode, defaults and errors --------------------------------------------------------


def test_independent_outputs_give_zeros_or_raise_in_strict_mode():
    x, y = torch.randn(2), torch.randn(3)

    def f(a, b):
        return a * 2

    _, jy = F.jacobian(f, (x, y))
    assert jy.numpy().tolist() == np.zeros((2, 3)).tolist()
    with pytest.raises(RuntimeError, match="Output 0 of the user-provided function is independent of input 1"):
        F.jacobian(f, (x, y), strict=True)
    _, (_, gy) = F.vjp(f, (x, y), torch.ones(2))
    assert gy.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(RuntimeError, match="independent of input 1"):
        F.vjp(f, (x, y), torch.ones(2), strict=True)
    with pytest.raises(RuntimeError, match="jacobian of the user-provided function with respect to input 0 is"):
        F.hessian(lambda a: (a * 2).sum(), x, strict=True)
    with pytest.raises(RuntimeError, match="not supported together"):
        F.jacobian(f, (x, y), strict=True, strategy="forward-mode")


def test_v_may_be_omitted_only_for_single_elements():
    x = torch.tensor([2.0])
    assert F.vjp(lambda t: t**2, x)[1].tolist() == [4.0]
    assert F.jvp(lambda t: t**2, x)[1].tolist() == [4.0]
    assert F.hvp(lambda t: (t**3).sum(), x)[1].tolist() == [12.0]
    with pytest.raises(RuntimeError, match="v can only be None if the user-provided function returns"):
        F.vjp(lambda t: t**2, torch.ones(2))
    with pytest.raises(RuntimeError, match="v can only be None if the input to the user-provided function"):
        F.jvp(lambda t: t**2, torch.ones(2))


def test_argument_errors():
    with pytest.raises(TypeError, match="The inputs given to jacobian must be either a Tensor or a tuple"):
        F.jacobian(lambda t: t, [torch.ones(2)])
    with pytest.raises(RuntimeError, match=r"v has invalid size: should be engine.Size\(\[2\]\)"):
        F.vjp(lambda t: t * 2, torch.ones(2), torch.ones(3))
    with pytest.raises(RuntimeError, match="v is a tuple of invalid length: should be 2 but got 1"):
        F.jvp(lambda a, b: a * b, (torch.ones(2), torch.ones(2)), (torch.ones(2),))
    with pytest.raises(RuntimeError, match="should contain a single element"):
        F.hessian(lambda t: t * 2, torch.ones(2))
    with pytest.raises(RuntimeError, match="should return a single Tensor"):
        F.hvp(lambda t: (t.sum(), t.sum()), torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="strategy"):
        F.jacobian(lambda t: t, torch.ones(2), strategy="sideways")
    with pytest.raises(ValueError, match="chunk_size"):
        F.jacobian(lambda t: t, torch.ones(2), chunk_size=0)


# ---- against PyTorch (the `torch` fixture is PyTorch itself; ours is `engine`) -------------


def _to_torch(torch_mod, value):
    return torch_mod.tensor(value.numpy())


def _compare(ours, theirs):
    # PyTorch's forward-mode jacobian nests in lists where its reverse mode uses tuples; ours is
    # tuples throughout.
    if isinstance(theirs, (tuple, list)):
        assert isinstance(ours, tuple) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _compare(a, b)
        return
    assert isinstance(ours, engine.Tensor), type(ours)
    assert tuple(ours.shape) == tuple(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


FUNCTIONS = {
    # name: (inputs as shapes, builder(lib) -> fn)
    "one-in-one-out": ([(3,)], lambda lib: lambda x: lib.tanh(x) * x.sum()),
    "one-in-two-out": ([(2, 2)], lambda lib: lambda x: (x.exp(), (x * x).sum())),
    "two-in-one-out": ([(3,), (2, 3)], lambda lib: lambda x, y: (y * x.sin()).sum(0)),
    "two-in-two-out": ([(3,), (3,)], lambda lib: lambda x, y: (x * y, (x - y).exp())),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("tupled", [True, False])
def test_jacobian_vjp_jvp_against_torch(torch, name, tupled):
    shapes, build = FUNCTIONS[name]
    if not tupled and len(shapes) > 1:
        pytest.skip("several inputs are always a tuple")
    rng = np.random.default_rng(7)
    ours_in = tuple(ours_of(rng.standard_normal(s)) for s in shapes)
    theirs_in = tuple(_to_torch(torch, x) for x in ours_in)
    ours_arg = ours_in if tupled else ours_in[0]
    theirs_arg = theirs_in if tupled else theirs_in[0]
    f_ours, f_theirs = build(engine), build(torch)

    for strategy in ("reverse-mode", "forward-mode"):
        _compare(F.jacobian(f_ours, ours_arg, strategy=strategy),
                 torch.autograd.functional.jacobian(f_theirs, theirs_arg, vectorize=True, strategy=strategy))

    outs = f_theirs(*theirs_in)
    outs = outs if isinstance(outs, tuple) else (outs,)
    v_out = tuple(torch.tensor(rng.standard_normal(tuple(o.shape))) for o in outs)
    v_in = tuple(torch.tensor(rng.standard_normal(s)) for s in shapes)
    v_out_arg = v_out if isinstance(f_theirs(*theirs_in), tuple) else v_out[0]
    v_in_arg = v_in if tupled else v_in[0]
    _compare(F.vjp(f_ours, ours_arg, _ours_of(v_out_arg)),
             torch.autograd.functional.vjp(f_theirs, theirs_arg, v_out_arg))
    _compare(F.jvp(f_ours, ours_arg, _ours_of(v_in_arg)),
             torch.autograd.functional.jvp(f_theirs, theirs_arg, v_in_arg))


@pytest.mark.parametrize("tupled", [True, False])
def test_hessian_hvp_vhp_against_torch(torch, tupled):
    rng = np.random.default_rng(8)
    shapes = [(3,), (2, 2)] if tupled else [(2, 3)]

    def build(lib):
        if tupled:
            return lambda x, y: (x.sin() * y.sum()).sum() + (y**3).sum() * x.exp().sum()
        return lambda x: (x.tanh() ** 2).sum() + x.prod()

    ours_in = tuple(ours_of(rng.standard_normal(s)) for s in shapes)
    theirs_in = tuple(_to_torch(torch, x) for x in ours_in)
    ours_arg, theirs_arg = (ours_in, theirs_in) if tupled else (ours_in[0], theirs_in[0])
    v = tuple(rng.standard_normal(s) for s in shapes)
    v_ours = tuple(ours_of(a) for a in v)
    v_theirs = tuple(torch.tensor(a) for a in v)
    if not tupled:
        v_ours, v_theirs = v_ours[0], v_theirs[0]
    f_ours, f_theirs = build(engine), build(torch)
    tf = torch.autograd.functional
    for strategy in ("forward-mode", "reverse-mode"):
        _compare(F.hessian(f_ours, ours_arg, outer_jacobian_strategy=strategy),
                 tf.hessian(f_theirs, theirs_arg, vectorize=True, outer_jacobian_strategy=strategy))
    _compare(F.hvp(f_ours, ours_arg, v_ours), tf.hvp(f_theirs, theirs_arg, v_theirs))
    _compare(F.vhp(f_ours, ours_arg, v_ours), tf.vhp(f_theirs, theirs_arg, v_theirs))


def ours_of(array):
    return engine.tensor(array, dtype=f64)


def _ours_of(value):
    if isinstance(value, tuple):
        return tuple(_ours_of(v) for v in value)
    return engine.tensor(value.numpy())


@pytest.mark.parametrize("strategy", ["reverse-mode", "forward-mode"])
def test_results_are_the_callers_to_modify(strategy):
    """Gradients of sums are broadcast views inside the engine; results must still be writable."""
    x = torch.randn(3)
    jac = F.jacobian(lambda t: t.sum(), x, strategy=strategy)
    jac.add_(1)
    _, grad = F.vjp(lambda t: t.sum(), x)
    grad.mul_(2)
    out, tangent = F.jvp(lambda t: t.expand(2, 3), x, torch.ones(3))
    out.add_(1)
    tangent.add_(1)
    assert grad.tolist() == [2.0, 2.0, 2.0] and tangent.tolist() == [[2.0] * 3] * 2
    np.testing.assert_allclose(jac.numpy(), 2.0)


def test_jvp_strict_names_the_input_an_output_ignores():
    x, y = torch.randn(2), torch.randn(2)
    _, tangent = F.jvp(lambda a, b: a * 3, (x, y), (torch.ones(2), torch.ones(2)), strict=False)
    assert tangent.tolist() == [3.0, 3.0]
    with pytest.raises(RuntimeError, match="The output of the user-provided function is independent of input 1"):
        F.jvp(lambda a, b: a * 3, (x, y), (torch.ones(2), torch.ones(2)), strict=True)
    with pytest.raises(RuntimeError, match="Output 0 of the user-provided function does not require gradients"):
        F.jvp(lambda a: torch.ones(2), x, torch.ones(2), strict=True)
    _, tangent = F.jvp(lambda a, b: a * b, (x, y), (torch.ones(2), torch.ones(2)), strict=True)
    np.testing.assert_allclose(tangent.numpy(), (x + y).numpy())
