"""Custom Functions (engine/autograd/custom_function.py): PyTorch's ``autograd.Function`` contract.

Gradients are held to float64 central differences or to their closed forms;
names, errors and the behaviour of ``ctx`` to PyTorch's (run side by side
where torch is installed).
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.autograd import Function, once_differentiable
from engine.autograd import forward_ad as fwAD
from tests import finite_differences
from tests.engine.autograd.leaves import leaf


def define_functions(lib):
    """The Functions these tests use, written once against ``lib`` (engine, or torch)."""

    class Exp(Function if lib is engine else lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            result = x.exp()
            ctx.save_for_backward(result)
            return result

        @staticmethod
        def backward(ctx, g):
            (result,) = ctx.saved_tensors
            return g * result

    class Cube(Function if lib is engine else lib.autograd.Function):
        """forward + setup_context; backward in ops, so it is differentiable again."""

        @staticmethod
        def forward(x):
            return x ** 3

        @staticmethod
        def setup_context(ctx, inputs, output):
            (x,) = inputs
            ctx.save_for_backward(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * x ** 2

    class ScaledProduct(Function if lib is engine else lib.autograd.Function):
        """Two tensors and a number in, two tensors and a number out."""

        @staticmethod
        def forward(ctx, x, y, scale):
            ctx.save_for_backward(x, y)
            ctx.scale = scale
            return x * y * scale, x + y, "a label"

        @staticmethod
        def backward(ctx, g_product, g_sum, g_label):
            x, y = ctx.saved_tensors
            ctx.seen = (ctx.needs_input_grad, g_label)
            grad_x = g_product * y * ctx.scale + g_sum if ctx.needs_input_grad[0] else None
            grad_y = g_product * x * ctx.scale + g_sum if ctx.needs_input_grad[1] else None
            return grad_x, grad_y, None

    return Exp, Cube, ScaledProduct


Exp, Cube, ScaledProduct = define_functions(engine)


def test_grad_fn_is_the_class_name_plus_backward_and_sits_in_the_graph():
    x = leaf([0.5, -1.0])
    y = Exp.apply(x)
    z = (y * 2).sum()
    assert y.grad_fn.name() == "ExpBackward" and type(y.grad_fn).__name__ == "ExpBackward"
    assert repr(y.grad_fn).startswith("<engine.autograd.function.ExpBackward object at 0x")
    mul = z.grad_fn.next_functions[0][0]
    assert mul.next_functions[0] == (y.grad_fn, 0)
    assert y.grad_fn.next_functions[0][0].name() == "AccumulateGrad"
    assert y.grad_fn.next_functions[0][0].variable is x


def test_gradient_of_a_saved_output_matches_the_closed_form():
    x = leaf([0.5, -1.0, 2.0])
    Exp.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp([0.5, -1.0, 2.0]), rtol=1e-12)


def test_setup_context_and_double_backward_match_finite_differences():
    values = np.array([0.5, -1.0, 2.0])
    x = leaf(values)
    (g,) = engine.autograd.grad(Cube.apply(x).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), 3 * values ** 2, rtol=1e-12)
    (gg,) = engine.autograd.grad(g.sum(), x)
    second = finite_differences.jacobian(lambda a: 3 * a[0] ** 2, [values])[0][0].sum(axis=0)
    np.testing.assert_allclose(gg.numpy(), second, rtol=1e-6)


def test_non_tensor_arguments_outputs_and_needs_input_grad():
    x, y = leaf([1.0, 2.0]), engine.tensor([3.0, -1.0], dtype=engine.float64)
    product, total, label = ScaledProduct.apply(x, y, 0.5)
    assert label == "a label" and product.requires_grad and total.requires_grad
    assert product.grad_fn is total.grad_fn
    (product.sum() + 2 * total.sum()).backward()
    assert product.grad_fn.seen == ((True, False, False), None)
    np.testing.assert_allclose(x.grad.numpy(), [3.0 * 0.5 + 2, -1.0 * 0.5 + 2])


def test_edges_carry_the_output_number_and_gradients_reach_their_output():
    x, y = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    product, total, _ = ScaledProduct.apply(x, y, 1.0)
    mixed = product * total
    assert mixed.grad_fn.next_functions == ((product.grad_fn, 0), (product.grad_fn, 1))
    total.sum().backward(retain_graph=True)  # only output 1 has a gradient: output 0's is zeros
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])
    np.testing.assert_allclose(y.grad.numpy(), [1.0, 1.0])
    (gx,) = engine.autograd.grad(total, x, engine.ones(2, dtype=engine.float64))
    np.testing.assert_allclose(gx.numpy(), [1.0, 1.0])


def test_set_materialize_grads_false_passes_none():
    seen = []

    class Split(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(False)
            return x * 1, x * 2

        @staticmethod
        def backward(ctx, a, b):
            seen.append((a is None, b is None))
            return (a if a is not None else 0) + (2 * b if b is not None else 0)

    x = leaf([1.0, 2.0])
    _, second = Split.apply(x)
    second.sum().backward()
    assert seen == [(True, False)]
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_wrong_gradient_count_and_gradient_for_a_number_raise():
    class TooFew(Function):
        @staticmethod
        def forward(ctx, x, y):
            return x * y

        @staticmethod
        def backward(ctx, g):
            return g

    class NumberGrad(Function):
        @staticmethod
        def forward(ctx, x, k):
            return x * k

        @staticmethod
        def backward(ctx, g):
            return g, g

    x = leaf([1.0])
    with pytest.raises(RuntimeError, match=r"returned an incorrect number of gradients \(expected 2, got 1\)"):
        TooFew.apply(x, x).sum().backward()
    with pytest.raises(RuntimeError, match="was not a Variable"):
        NumberGrad.apply(x, 2.0).sum().backward()


def test_gradient_broadcast_to_a_larger_shape_is_summed_back_and_a_bad_shape_raises():
    class Broadcasting(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, g):
            return g.expand(3, 2)

    class BadShape(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, g):
            return engine.ones(5, dtype=engine.float64)

    x = leaf([1.0, 2.0])
    Broadcasting.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])
    with pytest.raises(RuntimeError, match=r"returned an invalid gradient at index 0 - got \[5\]"):
        BadShape.apply(x).sum().backward()


def test_mark_dirty_returns_the_input_with_new_history():
    class DoubleInPlace(Function):
        @staticmethod
        def forward(ctx, x):
            x.mul_(2)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, g):
            return g * 2

    a = leaf([1.0, 2.0])
    b = a * 1
    version = b._version
    c = DoubleInPlace.apply(b)
    assert c is b and c.grad_fn.name() == "DoubleInPlaceBackward"
    assert b._version == version + 2  # the write, and mark_dirty's own count (as PyTorch)
    assert c.grad_fn.next_functions[0][0].name() == "MulBackward0"
    c.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [2.0, 2.0])
    np.testing.assert_allclose(c.detach().numpy(), [2.0, 4.0])
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad has been used in an in-place"):
        DoubleInPlace.apply(leaf([1.0]))


def test_mark_non_differentiable_and_integer_outputs_carry_no_gradient():
    class WithMask(Function):
        @staticmethod
        def forward(ctx, x):
            mask = x > 0
            ctx.mark_non_differentiable(mask)
            ctx.save_for_backward(mask)
            return x.clamp(min=0), mask, (x > 0).long()

        @staticmethod
        def backward(ctx, g, g_mask, g_index):
            (mask,) = ctx.saved_tensors
            ctx.seen = (g_mask.numpy().tolist(), g_index.numpy().tolist())
            return g * mask

    x = leaf([-1.0, 2.0])
    relu, mask, index = WithMask.apply(x)
    assert not mask.requires_grad and mask.grad_fn is None and not index.requires_grad
    relu.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 1.0])
    assert relu.grad_fn.seen == ([False, False], [0, 0])  # zeros of their dtypes


def test_an_input_returned_as_is_comes_back_as_an_alias():
    class Identity(Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, g):
            return 3 * g

    x = leaf([1.0, 2.0])
    y = Identity.apply(x)
    assert y is not x and not y.is_leaf and y.grad_fn.name() == "IdentityBackward"
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])
    with engine.no_grad():
        z = Identity.apply(x)
    assert z is not x and not z.requires_grad and z.grad_fn is None


def test_saved_tensor_modified_in_place_raises_with_the_version():
    x = leaf([1.0, 2.0])
    y = Exp.apply(x)
    y.add_(1)
    with pytest.raises(RuntimeError, match="output 0 of Exp, is at version 1; expected version 0"):
        y.sum().backward()


def test_saved_tensors_are_freed_after_backward_unless_retained():
    x = leaf([1.0, 2.0])
    y = Exp.apply(x)
    y.sum().backward(retain_graph=True)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        y.sum().backward()


def test_once_differentiable_backward_works_once_and_refuses_a_second_derivative():
    class OnceExp(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.exp()

        @staticmethod
        @once_differentiable
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x.exp()

    x = leaf([0.0, 1.0])
    (g,) = engine.autograd.grad(OnceExp.apply(x).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), np.exp([0.0, 1.0]), rtol=1e-12)
    assert not g.requires_grad  # the seed needs no gradient: nothing to refuse (as PyTorch)
    v = leaf([1.0, 2.0])
    (g,) = engine.autograd.grad(OnceExp.apply(x), x, v, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), [1.0, 2 * np.e], rtol=1e-12)
    assert g.requires_grad and g.grad_fn.name() == "Error"
    with pytest.raises(RuntimeError, match="trying to differentiate twice a function that was marked with"):
        g.sum().backward()


def test_forward_mode_through_jvp_and_save_for_forward():
    class Sin(Function):
        @staticmethod
        def forward(ctx, x, scale):
            ctx.save_for_forward(x)
            ctx.scale = scale
            return x.sin() * scale

        @staticmethod
        def jvp(ctx, dx, dscale):
            (x,) = ctx.saved_tensors
            assert dscale is None  # a number has no tangent
            return dx * x.cos() * ctx.scale

    values, direction = np.array([0.3, -1.2]), np.array([1.0, 0.5])
    with fwAD.dual_level():
        dual = fwAD.make_dual(engine.tensor(values), engine.tensor(direction))
        tangent = fwAD.unpack_dual(Sin.apply(dual, 2.0)).tangent
    expected = finite_differences.directional_derivative(lambda a: np.sin(a[0]) * 2.0, [values], [direction])
    np.testing.assert_allclose(tangent.numpy(), expected, rtol=1e-6)


def test_missing_modes_raise_pytorchs_errors():
    class ForwardOnly(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

    x = leaf([1.0])
    with pytest.raises(NotImplementedError, match="You must implement either the backward or vjp method"):
        ForwardOnly.apply(x).sum().backward()
    with fwAD.dual_level():
        dual = fwAD.make_dual(engine.tensor([1.0]), engine.tensor([1.0]))
        with pytest.raises(NotImplementedError, match="You must implement the jvp function"):
            ForwardOnly.apply(dual)
    with pytest.raises(RuntimeError, match="Legacy autograd function with non-static forward method"):
        ForwardOnly()(x)


def test_gradcheck_and_gradgradcheck_pass_and_catch_a_wrong_backward():
    class WrongSin(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x.cos() * 1.01  # off by 1%

    x = leaf([0.3, -0.7, 1.1])
    assert engine.autograd.gradcheck(Cube.apply, (x,))
    assert engine.autograd.gradgradcheck(Cube.apply, (x,))
    assert engine.autograd.gradcheck(Exp.apply, (x,))
    assert not engine.autograd.gradcheck(WrongSin.apply, (x,), raise_exception=False)


def test_same_values_names_and_versions_as_pytorch(torch):
    theirs = define_functions(torch)
    values = [0.5, -1.0, 2.0]
    results = []
    for lib, (exp, cube, product) in ((engine, (Exp, Cube, ScaledProduct)), (torch, theirs)):
        x = lib.tensor(values, dtype=lib.float64, requires_grad=True)
        y = lib.tensor([1.5, 0.5, -2.0], dtype=lib.float64, requires_grad=True)
        p, s, _ = product.apply(exp.apply(x), cube.apply(y), 0.25)
        out = (p * s).sum()
        (gx, gy) = lib.autograd.grad(out, (x, y), create_graph=True)
        (ggx,) = lib.autograd.grad((gx * gy).sum(), x)
        names = [p.grad_fn.name(), [n.name() for n, _ in p.grad_fn.next_functions],
                 [i for _, i in (p * s).grad_fn.next_functions]]
        results.append((names, [t.detach().numpy() for t in (out, gx, gy, ggx)]))
    (our_names, ours), (their_names, theirs_values) = results
    assert our_names == their_names
    for a, b in zip(ours, theirs_values):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def _hooks_on_outputs_run(lib):
    class Two(Function if lib is engine else lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, a, b):
            return 2 * a + 3 * b

    seen = []
    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    a, b = Two.apply(x)
    b.retain_grad()
    a.retain_grad()
    b.register_hook(lambda g: seen.append(("b", g.tolist())) or g * 10)
    a.register_hook(lambda g: seen.append(("a", g.tolist())))
    a.grad_fn.register_prehook(lambda grads: seen.append(("node", [g.tolist() for g in grads])))
    (a.sum() + (b * b).sum()).backward()
    return seen, a.grad.tolist(), b.grad.tolist(), x.grad.tolist()


def test_hooks_and_retained_gradients_of_each_output_as_pytorch(torch):
    ours, theirs = _hooks_on_outputs_run(engine), _hooks_on_outputs_run(torch)
    # b's hook was registered first and multiplies its gradient by 10; retained gradients come last
    assert ours == theirs
    assert ours[0][0] == ("b", [6.0, 12.0]) and ours[2] == [60.0, 120.0]


def test_gradcheck_with_forward_ad_catches_a_wrong_jvp():
    def cube_with_jvp(factor):
        class Cube(Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_forward(x)
                ctx.save_for_backward(x)
                return x ** 3

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return 3 * x ** 2 * g

            @staticmethod
            def jvp(ctx, dx):
                (x,) = ctx.saved_tensors
                return 3 * x ** 2 * dx * factor

        return Cube

    x = leaf([0.3, -1.2, 2.0])
    assert engine.autograd.gradcheck(cube_with_jvp(1.0).apply, (x,), check_forward_ad=True)
    wrong = cube_with_jvp(1.05).apply
    assert engine.autograd.gradcheck(wrong, (x,))  # reverse mode alone cannot see it
    assert not engine.autograd.gradcheck(wrong, (x,), check_forward_ad=True, raise_exception=False)
    with pytest.raises(RuntimeError, match="forward AD: Jacobian mismatch"):
        engine.autograd.gradcheck(wrong, (x,), check_forward_ad=True)


def test_setup_context_sees_defaults_and_keywords():
    class Affine(Function):
        @staticmethod
        def forward(x, factor=2.0, shift=0.0):
            return x * factor + shift

        @staticmethod
        def setup_context(ctx, inputs, output):
            _, ctx.factor, _ = inputs

        @staticmethod
        def backward(ctx, g):
            return g * ctx.factor, None, None

    x = leaf([1.0, 2.0])
    Affine.apply(x).sum().backward()
    Affine.apply(x, factor=4.0, shift=1.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 6.0])


def test_a_leafs_node_runs_its_hooks():
    calls = []
    x = leaf([1.0, 2.0])
    y = Exp.apply(x)
    node = y.grad_fn.next_functions[0][0]
    node.register_prehook(lambda grad_outputs: calls.append(("pre", len(grad_outputs))))
    node.register_hook(lambda grad_inputs, grad_outputs: calls.append(("post", len(grad_inputs), len(grad_outputs))))
    y.sum().backward()
    assert calls == [("pre", 1), ("post", 0, 1)]


def test_autograd_grad_with_respect_to_each_output_of_a_function():
    x, y = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    product, total, _ = ScaledProduct.apply(x, y, 1.0)
    loss = (product * 2).sum() + (total * 5).sum()
    g_product, g_total = engine.autograd.grad(loss, (product, total))
    np.testing.assert_array_equal(g_product.numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(g_total.numpy(), [5.0, 5.0])
