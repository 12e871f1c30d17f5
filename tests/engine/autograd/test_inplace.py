"""In-place ops and version counters (engine/autograd/inplace.py): PyTorch's rules for in-place
writes on leaves, saved tensors and views, the version checks at backward, and writes through any
view into its base (CopySlices). Expected values are analytic formulas, float64 finite differences
(gradcheck) or PyTorch's own behaviour."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.autograd import grad, gradcheck, gradgradcheck
from tests.engine.autograd.leaves import leaf

# ---- in-place ops and version counters -------------------------------------------


@pytest.mark.torch
def test_in_place_on_leaf_requiring_grad_raises_at_once(torch):
    texts = []
    for module in (engine, torch):
        x = module.ones(3, requires_grad=True)
        with pytest.raises(RuntimeError) as caught:
            x.add_(1)
        texts.append(str(caught.value))
    assert texts[0] == texts[1]


def test_in_place_on_leaf_is_fine_under_no_grad():
    x = leaf([1.0, 2.0])
    with engine.no_grad():
        x.mul_(2)
    assert x._version == 1
    np.testing.assert_allclose(x.detach().numpy(), [2.0, 4.0])


def test_every_in_place_op_bumps_the_version():
    x = engine.zeros(3, dtype=engine.float64)
    steps = [lambda: x.add_(1), lambda: x.sub_(0.5), lambda: x.mul_(2), lambda: x.div_(4),
             lambda: x.clamp_(0, 1), lambda: x.sin_(), lambda: x.fill_(2), lambda: x.zero_(),
             lambda: x.copy_(engine.ones(3)), lambda: x.__setitem__(0, 3.0)]
    for i, step in enumerate(steps, 1):
        step()
        assert x._version == i
    x += 1
    assert x._version == len(steps) + 1
    np.testing.assert_allclose(x.numpy(), [4.0, 2.0, 2.0])


def test_view_shares_version_counter_and_memory():
    x = engine.arange(6, dtype=engine.float64)
    v = x.view(2, 3)[1]
    v.mul_(10)
    assert x._version == v._version == 1
    np.testing.assert_allclose(x.numpy(), [0, 1, 2, 30, 40, 50])


def test_modified_saved_output_raises_at_backward_naming_op_and_versions():
    x = leaf([1.0, 2.0, 3.0])
    y = x.exp()  # exp saves its output
    y.add_(1)
    with pytest.raises(RuntimeError) as caught:
        y.sum().backward()
    message = str(caught.value)
    assert "modified by an inplace operation" in message
    assert "ExpBackward0" in message
    assert "is at version 1; expected version 0" in message


def test_modified_saved_input_raises_at_backward():
    x = leaf([1.0, 2.0])
    a = x * 1
    b = a.sin()  # sin saves its input
    a.mul_(2)
    with pytest.raises(RuntimeError, match=r"SinBackward0.*version 1; expected version 0"):
        b.sum().backward()


def test_in_place_on_tensor_not_saved_is_fine():
    x = leaf([1.0, 2.0])
    y = x * 2  # mul by a constant saves only the constant side
    y.add_(1)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_recorded_in_place_op_becomes_grad_fn_and_differentiates():
    x = leaf([0.3, 0.9])
    y = x * 1
    y.sin_()
    assert y.grad_fn.name() == "SinBackward0"
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.cos([0.3, 0.9]), rtol=1e-12)


def test_engine_sin_underscore_as_tutorial_calls_it():
    x = leaf([0.5])
    y = x * 1
    engine.sin_(y)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.cos([0.5]), rtol=1e-12)


def test_setitem_on_non_leaf_routes_gradient():
    x = leaf([1.0, 2.0, 3.0])
    v = leaf([5.0])
    y = x.clone()
    y[1] = v * 2
    (y * y).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 0.0, 6.0])
    np.testing.assert_allclose(v.grad.numpy(), [2 * 10.0 * 2])


def test_in_place_on_view_of_leaf_raises():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="view of a leaf Variable"):
        x[0].mul_(2)


# ---- more version-counter semantics ----------------------------------------------------


def test_in_place_under_no_grad_on_saved_leaf_still_fails_backward():
    x = leaf([1.0, 2.0])
    y = x.sin()
    with engine.no_grad():
        x.mul_(2)
    with pytest.raises(RuntimeError, match="is at version 1; expected version 0"):
        y.sum().backward()


def test_in_place_through_detach_is_seen_by_backward():
    x = leaf([1.0, 2.0])
    y = x.exp()
    y.detach().zero_()
    with pytest.raises(RuntimeError, match="ExpBackward0"):
        y.sum().backward()


def test_double_backward_through_recorded_in_place_op():
    x = leaf([0.4, 1.1])
    y = x * 1
    y.mul_(x)  # y = x^2, recorded in place
    (g,) = grad(y.sum(), x, create_graph=True)
    (h,) = grad(g.sum(), x)
    np.testing.assert_allclose(g.detach().numpy(), [0.8, 2.2])
    np.testing.assert_allclose(h.numpy(), [2.0, 2.0])


@pytest.mark.torch
def test_saved_tensor_error_matches_pytorch_wording(torch):
    texts = []
    for module in (engine, torch):
        x = module.ones(3, requires_grad=True)
        y = x.exp()
        y.add_(1)
        with pytest.raises(RuntimeError) as caught:
            y.sum().backward()
        texts.append(str(caught.value))
    ours, theirs = texts
    # PyTorch 2.13 names the op ("output 0 of Exp"); ours names its node ("of ExpBackward0").
    head = theirs.split(" Hint")[0].replace("torch.", "engine.")
    head = head.replace("output 0 of Exp,", "output 0 of ExpBackward0,")
    assert ours.startswith(head)


# ---- in-place ops on views write through to the base (PyTorch's CopySlices) -------------


def _write_through_example(lib):
    x = lib.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=lib.float64, requires_grad=True)
    y = x * 2
    y[0] += 1
    y[:, 1].mul_(y[1, :].sum())
    (y.sin() * y).sum().backward()
    return y.detach().numpy(), x.grad.numpy()


def test_in_place_on_an_index_view_updates_the_base_and_its_history():
    x = engine.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=engine.float64, requires_grad=True)
    y = x * 2
    y[0] += 1  # y = 2x + [[1, 1], [0, 0]]
    (y * y).sum().backward()
    expected_y = 2 * np.array([[1.0, 2.0], [3.0, 4.0]]) + np.array([[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(y.detach().numpy(), expected_y)
    np.testing.assert_allclose(x.grad.numpy(), 4 * expected_y)  # d sum(y^2)/dx = 2y * 2


def test_buffer_filled_through_views_gets_gradients():
    w = engine.tensor([1.0, -2.0, 0.5], dtype=engine.float64, requires_grad=True)
    buf = engine.zeros(2, 3, dtype=engine.float64)
    buf[1].add_(w * 3)
    buf[0].copy_(w.exp())
    assert buf.grad_fn is not None
    (buf**2).sum().backward()
    ws = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(w.grad.numpy(), 18 * ws + 2 * np.exp(2 * ws), rtol=1e-12)


def test_view_taken_before_its_base_required_grad_is_recorded_when_written():
    # PyTorch refuses r0.mul_ here (it takes r0 for a leaf); ours records it, with the right gradient.
    w = engine.tensor([1.0, -2.0, 0.5], dtype=engine.float64, requires_grad=True)
    buf = engine.zeros(2, 3, dtype=engine.float64)
    r0 = buf[0]
    buf[0].add_(w * 3)
    buf[1].copy_(w.exp())
    r0.mul_(2)  # buf[0] = 6 w
    (buf**2).sum().backward()
    ws = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(w.grad.numpy(), 72 * ws + 2 * np.exp(2 * ws), rtol=1e-12)


@pytest.mark.torch
def test_write_through_views_matches_pytorch(torch):
    ours, theirs = _write_through_example(engine), _write_through_example(torch)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12)


def test_in_place_on_a_view_of_a_leaf_still_raises():
    x = engine.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        x[0].add_(1)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        x.view(3, 1).t()[0].add_(1)


# Views of every kind and depth, written in place in several ways: the write lands in the base,
# whose grad_fn becomes CopySlices; the view's becomes AsStridedBackward0; both share one
# version counter; gradients through base and view are PyTorch's.
VIEWS = {
    "index": lambda y: y[0],
    "view_of_view": lambda y: y[1][0:2],
    "view": lambda y: y.view(3, 2),
    "reshape": lambda y: y.reshape(6),
    "flatten": lambda y: y.flatten(),
    "t": lambda y: y.t(),
    "transpose": lambda y: y.transpose(0, 1),
    "permute": lambda y: y.permute(1, 0),
    "T": lambda y: y.T,
    "mT": lambda y: y.mT,
    "unsqueeze": lambda y: y.unsqueeze(0),
    "squeeze": lambda y: y.unsqueeze(0).squeeze(0),
    "narrow": lambda y: y.narrow(1, 0, 2),
    "t_then_index": lambda y: y.t()[1],
    "view_t_slice": lambda y: y.view(3, 2).t()[1:],
}
WRITES = {
    "mul_": lambda z, w: z.mul_(3),
    "add_tensor": lambda z, w: z.add_((w * w).sum()),
    "copy_": lambda z, w: z.copy_(w.sum().expand(z.shape)),
    "twice": lambda z, w: z.mul_(w[0]).sin_(),
    "setitem": lambda z, w: z.__setitem__(0, w.sum()),
}


def _view_write_example(lib, view, write):
    x = lib.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=lib.float64, requires_grad=True)
    w = lib.tensor([0.5, -1.5], dtype=lib.float64, requires_grad=True)
    y = x * 2
    z = VIEWS[view](y)
    WRITES[write](z, w)
    names = [node.name().split("::")[-1] for node in (y.grad_fn, z.grad_fn)]
    facts = [names, y._version, z._version, z._base is y]
    grads = []
    for out in ((y.sin() * y).sum(), (z.cos() * 3).sum()):  # through the base, through the view
        found = lib.autograd.grad(out, (x, w), retain_graph=True, allow_unused=True)
        grads += [None if g is None else g.numpy() for g in found]
    return facts, y.detach().numpy(), grads


@pytest.mark.torch
@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize("view", sorted(VIEWS))
def test_in_place_on_any_view_matches_pytorch(torch, view, write):
    ours, theirs = _view_write_example(engine, view, write), _view_write_example(torch, view, write)
    assert ours[0] == theirs[0]
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12)
    for a, b in zip(ours[2], theirs[2]):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_in_place_on_any_view_against_finite_differences(view):
    def fn(x, w):
        y = x * 1.5
        z = VIEWS[view](y)
        z.mul_(w[0]).add_(w[1] * w[1])
        return (y.sin() * y).sum() + z.exp().sum()

    x = leaf([[0.3, -0.2, 0.5], [0.1, 0.4, -0.6]])
    w = leaf([0.7, -0.4])
    assert gradcheck(fn, (x, w))
    assert gradgradcheck(fn, (x, w))


# A view whose base was changed in place after the view was taken (through the base, another
# view, or under no_grad): when next used, its history is read again from the base.
def _stale_base(lib, x, y):
    v = y[0:2]
    y.mul_(3)
    return v.sum()


def _stale_sibling(lib, x, y):
    v, w = y[0:2], y[2:]
    w.mul_(3)
    return v.sum() + y.sum()


def _stale_then_written(lib, x, y):
    v = y.view(2, 2)[0]
    y.mul_(2)
    v.mul_(3)
    return v.sum() * y.sum()


def _stale_view_of_view(lib, x, y):
    u = y.view(2, 2)[1]
    y.add_(x)
    return u.exp().sum()


def _stale_under_no_grad(lib, x, y):
    v = y[1:]
    with lib.no_grad():
        y.mul_(3)
    return v.sum()


def _stale_root(lib, x, y):
    v = y[1:3]
    y.mul_(x)
    return v  # backward straight from the stale view


STALE = {f.__name__: f for f in (_stale_base, _stale_sibling, _stale_then_written, _stale_view_of_view,
                                 _stale_under_no_grad, _stale_root)}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(STALE))
def test_views_of_a_base_changed_in_place_match_pytorch(torch, name):
    results = []
    for lib in (engine, torch):
        x = lib.tensor([1.0, 2.0, 3.0, 4.0], dtype=lib.float64, requires_grad=True)
        y = x * 2
        out = STALE[name](lib, x, y)
        out.backward(lib.ones_like(out))
        results.append((x.grad.numpy(), y.detach().numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12)


def test_write_through_a_transposed_view_by_hand():
    x = leaf([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    y = x * 1
    z = y.t()[1]  # y[:, 1]
    z.mul_(10)
    np.testing.assert_allclose(y.detach().numpy(), [[1.0, 20.0], [3.0, 40.0], [5.0, 60.0]])
    assert y._version == z._version == 1
    assert y.grad_fn.name() == "CopySlices" and z.grad_fn.name() == "AsStridedBackward0"
    (y * y).sum().backward()  # d/dx sum(y^2) = 2 y dy/dx: 2 x on column 0, 2 (10 x) 10 on column 1
    np.testing.assert_allclose(x.grad.numpy(), [[2.0, 400.0], [6.0, 800.0], [10.0, 1200.0]])


@pytest.mark.torch
def test_writes_into_copies_stay_out_of_the_base(torch):
    # A reshape that must copy, and advanced indexing, give copies (no view, no shared version).
    results = []
    for lib in (engine, torch):
        x = lib.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=lib.float64, requires_grad=True)
        y = x * 2
        r = y.t().reshape(6)
        r.add_(1)
        i = y[lib.tensor([0, 1])]
        i.mul_(2)
        results.append((r._base is None, i._base is None, y._version, y.detach().numpy(),
                        r.grad_fn.name(), i.grad_fn.name()))
    assert results[0][:3] == results[1][:3] == (True, True, 0)
    np.testing.assert_allclose(results[0][3], results[1][3])
    assert results[0][4:] == results[1][4:]


def test_view_that_would_need_a_copy_raises_like_pytorch():
    x = engine.ones(2, 3)
    with pytest.raises(RuntimeError, match=r"view size is not compatible.*Use \.reshape"):
        x.t().view(6)
    assert x.t().reshape(6)._base is None  # reshape copies instead


def test_in_place_on_an_expanded_view_raises():
    y = leaf([1.0, 2.0]) * 1
    with pytest.raises(RuntimeError, match="more than one element refers to the same memory"):
        y.expand(2, 2).mul_(2)


@pytest.mark.torch
def test_views_of_a_detached_tensor_write_through_to_it(torch):
    # detach() shares memory and version but is no view for autograd: its views' writes go to it.
    results = []
    for lib in (engine, torch):
        y = lib.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=lib.float64, requires_grad=True) * 1
        w = lib.tensor([1.0], dtype=lib.float64, requires_grad=True)
        row = y[0].detach()
        row[None].add_(w)
        row.sum().backward()
        results.append((row._base is None, row.grad_fn.name().split("::")[-1], y._version,
                        y.detach().numpy(), w.grad.numpy(), y.grad_fn.name()))
    assert results[0][:3] == results[1][:3] and results[0][5] == results[1][5]
    np.testing.assert_allclose(results[0][3], results[1][3])
    np.testing.assert_allclose(results[0][4], results[1][4])


def test_ops_that_need_only_shapes_do_not_pin_versions():
    # sum, indexing and reshape keep sizes, not values (as PyTorch): a later in-place write
    # to their input does not invalidate them...
    x = engine.ones(3, requires_grad=True)
    y = x * 2
    s = y[1:].sum() + y.reshape(3, 1).sum()
    y.mul_(3)
    s.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 4.0])
    # ...while an op that needs the values still refuses.
    z = x * 2
    w = z.sin()
    z.mul_(3)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        w.sum().backward()
