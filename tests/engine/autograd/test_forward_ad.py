"""Forward-mode AD (engine.autograd.forward_ad): dual tensors driven by the table's jvp rules.

Every differentiable case of the op table goes through the dual-tensor
machinery (batched tangents, tangents on only some inputs) against float64
central differences; then the API (make_dual / unpack_dual / levels),
differentiable tangents, forward-over-reverse, in-place ops, grad-mode and
thread independence, and PyTorch's forward AD as an oracle.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import engine
import engine.autograd.forward_ad as fwAD
from engine import ops
from engine.autograd import function
from tests import finite_differences
from tests.engine.opcases import all_cases

BATCH = 3
TABLE = ops.table
CASES = [c for c in all_cases(TABLE) if c.smooth and not TABLE[c.op].nondiff]


def _args(case, arrays, flat):
    """Engine tensors for the op's arguments, the differentiable ones replaced by ``flat``."""
    if case.variadic:
        return [list(flat)]
    it = iter(flat)
    return [next(it) if d else engine.tensor(a) for a, d in zip(arrays, case.differentiable())]


def _flat(case, arrays):
    if case.variadic:
        return list(arrays[0])
    return [a for a, d in zip(arrays, case.differentiable()) if d]


def _value(op, case, arrays, flat):
    out = op(*_args(case, arrays, [engine.tensor(x) for x in flat]), **case.params)
    out = out[0] if op.extra_outputs else out
    return out.numpy().astype(np.float64)


def _numeric_jvp(op, case, arrays, tangents):
    return finite_differences.directional_derivative(lambda flat: _value(op, case, arrays, flat),
                                                     _flat(case, arrays), tangents)


def _dual_jvp(op, case, arrays, tangents):
    """The output tangent computed by the dual machinery; ``tangents`` entries may be None."""
    with fwAD.dual_level():
        duals = [engine.tensor(x) if t is None else fwAD.make_dual(engine.tensor(x), engine.tensor(t))
                 for x, t in zip(_flat(case, arrays), tangents)]
        out = op(*_args(case, arrays, duals), **case.params)
        out = out[0] if op.extra_outputs else out
        tangent = fwAD.unpack_dual(out).tangent
        return None if tangent is None else tangent.numpy()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_batched_duals_match_central_differences(case):
    """Rows of a batched tangent, some inputs without one (zeros padded in), against differences."""
    op = TABLE[case.op]
    if op.name in ("index_put", "copy_from"):
        pytest.skip("values broadcast against x[index] / x, not the output: no rank alignment applies")
    arrays = case.arrays()
    flat = _flat(case, arrays)
    rng = np.random.default_rng(3)
    for keep in ({*range(len(flat))}, {0}):
        tangents = [rng.standard_normal((BATCH, *np.shape(x))) if i in keep else None for i, x in enumerate(flat)]
        got = _dual_jvp(op, case, arrays, tangents)
        for b in range(BATCH):
            row = [np.zeros(np.shape(x)) if t is None else t[b] for x, t in zip(flat, tangents)]
            expected = _numeric_jvp(op, case, arrays, row)
            np.testing.assert_allclose(got[b], expected, atol=1e-6, rtol=1e-5, err_msg=f"{case.id} row {b}")


@pytest.mark.parametrize("case", CASES[::4], ids=[c.id for c in CASES[::4]])
def test_unbatched_duals_match_central_differences(case):
    op = TABLE[case.op]
    arrays = case.arrays()
    flat = _flat(case, arrays)
    rng = np.random.default_rng(4)
    tangents = [rng.standard_normal(np.shape(x)) for x in flat]
    got = _dual_jvp(op, case, arrays, tangents)
    np.testing.assert_allclose(got, _numeric_jvp(op, case, arrays, tangents), atol=1e-6, rtol=1e-5)


# ---- the API -------------------------------------------------------------------------


def test_sin_tangent_is_cos_times_v():
    x = engine.tensor([0.0, 0.5, 1.0, 2.0])
    v = engine.tensor([1.0, -2.0, 0.5, 3.0])
    with fwAD.dual_level():
        y = engine.sin(fwAD.make_dual(x, v)) * 2 + 1
        unpacked = fwAD.unpack_dual(y)
        assert isinstance(unpacked, fwAD.UnpackedDualTensor)
        primal, tangent = unpacked
        assert unpacked.primal is primal and unpacked.tangent is tangent
    np.testing.assert_allclose(primal.numpy(), 2 * np.sin(x.numpy()) + 1, rtol=1e-6)
    np.testing.assert_allclose(tangent.numpy(), 2 * np.cos(x.numpy()) * v.numpy(), rtol=1e-6)
    assert fwAD.unpack_dual(primal).tangent is None


def test_level_exit_drops_tangents_and_uninstalls_the_hook():
    assert function.forward_ad_hook is None
    with fwAD.dual_level():
        assert function.forward_ad_hook is not None
        dual = fwAD.make_dual(engine.ones(2), engine.ones(2))
        y = dual * 3
    assert function.forward_ad_hook is None
    assert fwAD.unpack_dual(y).tangent is None and fwAD.unpack_dual(dual).tangent is None
    with fwAD.dual_level():  # a new level does not see the old tangents either
        assert fwAD.unpack_dual(y).tangent is None


def test_enter_and_exit_by_hand():
    level = fwAD.enter_dual_level()
    try:
        d = fwAD.make_dual(engine.ones(2), engine.ones(2), level=level)
        assert fwAD.unpack_dual(d * 2, level=level).tangent.tolist() == [2.0, 2.0]
    finally:
        fwAD.exit_dual_level(level=level)
    with pytest.raises(RuntimeError, match="not the last one"):
        fwAD.exit_dual_level()


def test_make_dual_errors():
    with pytest.raises(RuntimeError, match="no level exists"):
        fwAD.make_dual(engine.ones(2), engine.ones(2))
    with fwAD.dual_level():
        with pytest.raises(RuntimeError, match="different size"):
            fwAD.make_dual(engine.ones(3), engine.ones(2))
        with pytest.raises(ValueError, match="floating point"):
            fwAD.make_dual(engine.arange(3), engine.ones(3))
        with pytest.raises(RuntimeError, match="Nested forward mode AD"), fwAD.dual_level():
            pass


def test_tangent_is_cast_to_the_primal_dtype():
    with fwAD.dual_level():
        d = fwAD.make_dual(engine.ones(2), engine.ones(2, dtype=engine.float64))
        t = fwAD.unpack_dual(d.exp()).tangent
    assert t.dtype is engine.float32


def test_dual_level_as_decorator():
    @fwAD.dual_level()
    def tangent_of_square(x, v):
        return fwAD.unpack_dual(fwAD.make_dual(x, v) ** 2).tangent

    assert tangent_of_square(engine.tensor([3.0]), engine.tensor([1.0])).tolist() == [6.0]


def test_propagates_under_no_grad():
    with fwAD.dual_level(), engine.no_grad():
        y = fwAD.make_dual(engine.tensor([1.0, 2.0]), engine.tensor([1.0, 1.0])).exp()
        tangent = fwAD.unpack_dual(y).tangent
    np.testing.assert_allclose(tangent.numpy(), np.exp([1.0, 2.0]), rtol=1e-6)


def test_constants_and_reductions_and_shapes():
    x = engine.randn(3, 4, dtype=engine.float64)
    v = engine.randn(3, 4, dtype=engine.float64)
    b = engine.randn(4, dtype=engine.float64)

    def f(t):
        return ((t * 2.0 + b).softmax(1)[:, 1:3].reshape(-1) @ engine.ones(6, dtype=engine.float64)).sum() / 3

    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(f(fwAD.make_dual(x, v))).tangent.item()
    numeric = finite_differences.directional_derivative(finite_differences.on_tensors(f), [x.numpy()],
                                                        [v.numpy()]).item()
    assert tangent == pytest.approx(numeric, rel=1e-6)


def test_batched_tangent_of_a_lower_rank_input_lines_up_with_the_batch():
    x = engine.randn(3, 4, dtype=engine.float64)
    bias = engine.randn(4, dtype=engine.float64)
    rows = engine.randn(3, 4, dtype=engine.float64)  # batch of 3 == x's first axis: must not mix them up
    with fwAD.dual_level():
        y = x + fwAD.make_dual(bias, rows)
        tangent = fwAD.unpack_dual(y).tangent
    assert tuple(tangent.shape) == (3, 3, 4)
    np.testing.assert_allclose(tangent.numpy(), np.broadcast_to(rows.numpy()[:, None, :], (3, 3, 4)))


def test_matmul_with_batched_one_dimensional_operands():
    rng = np.random.default_rng(0)
    a, m, stack = rng.standard_normal(3), rng.standard_normal((2, 3, 5)), rng.standard_normal((4, 3))
    with fwAD.dual_level():
        y = fwAD.make_dual(engine.tensor(a), engine.tensor(stack)) @ engine.tensor(m)  # (3,) @ (2, 3, 5)
        tangent = fwAD.unpack_dual(y).tangent.numpy()
    np.testing.assert_allclose(tangent, np.stack([s @ m for s in stack]), atol=1e-12)


def test_inplace_ops_carry_the_tangent():
    with fwAD.dual_level():
        d = fwAD.make_dual(engine.tensor([1.0, 2.0]), engine.tensor([1.0, 10.0]))
        y = d.clone()
        y.mul_(3)
        y[0] = d[1] * 2
        tangent = fwAD.unpack_dual(y).tangent
    assert tangent.tolist() == [20.0, 30.0]


def _tangents_through_views(lib, requires_grad):
    fw = lib.autograd.forward_ad
    with fw.dual_level():
        x = lib.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=lib.float64, requires_grad=requires_grad)
        d = fw.make_dual(x, lib.tensor([[1.0, 0.5], [-1.0, 2.0]], dtype=lib.float64))
        y = d * 2
        y.t()[0].mul_(3)  # y[:, 0] *= 3
        y.view(4)[3:].add_(d[0, 0] ** 2)  # y[1, 1] += d[0, 0]^2
        return fw.unpack_dual(y).tangent.detach().numpy()


@pytest.mark.torch
@pytest.mark.parametrize("requires_grad", [False, True])
def test_writes_through_views_update_the_base_tangent_as_pytorch(torch, requires_grad):
    ours = _tangents_through_views(engine, requires_grad)
    np.testing.assert_allclose(ours, _tangents_through_views(torch, requires_grad), rtol=1e-12)
    # by hand: 2 dx, times 3 on column 0, plus 2 x00 dx00 at [1, 1]
    np.testing.assert_allclose(ours, [[6.0, 1.0], [-6.0, 4.0 + 2.0]], rtol=1e-12)


def test_differentiable_tangents():
    """A tangent that requires grad: the jvp is recorded and can be differentiated (w.r.t. v and x)."""
    x = engine.tensor([0.3, 1.1], dtype=engine.float64, requires_grad=True)
    v = engine.tensor([2.0, -1.0], dtype=engine.float64, requires_grad=True)
    with fwAD.dual_level():
        y = engine.sin(fwAD.make_dual(x, v))
        tangent = fwAD.unpack_dual(y).tangent  # cos(x) * v
        tangent.sum().backward()
    np.testing.assert_allclose(v.grad.numpy(), np.cos(x.detach().numpy()))
    np.testing.assert_allclose(x.grad.numpy(), -np.sin(x.detach().numpy()) * v.detach().numpy())


def test_forward_over_reverse_gives_hessian_vector_products():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 3))
    x = engine.tensor(rng.standard_normal(3), requires_grad=True)
    v = rng.standard_normal(3)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, engine.tensor(v))
        out = (dual @ engine.tensor(a) @ dual) + dual.exp().sum()
        (g,) = engine.autograd.grad(out, dual, create_graph=True)
        hv = fwAD.unpack_dual(g).tangent.numpy()
    xn = x.detach().numpy()
    np.testing.assert_allclose(hv, (a + a.T) @ v + np.exp(xn) * v, rtol=1e-10)


def test_levels_are_per_context():
    """A thread with no level open sees no tangents, even while another thread has one open."""
    seen = {}
    entered, done = threading.Event(), threading.Event()

    def other():
        entered.wait()
        with fwAD.dual_level():
            pass  # its own level opens and closes independently
        t = engine.ones(2)
        seen["tangent"] = fwAD.unpack_dual(t * 2).tangent
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with fwAD.dual_level():
        d = fwAD.make_dual(engine.ones(2), engine.ones(2))
        entered.set()
        done.wait()
        assert fwAD.unpack_dual(d * 2).tangent.tolist() == [2.0, 2.0]
    thread.join()
    assert seen["tangent"] is None


def test_against_torch_forward_ad(torch):
    rng = np.random.default_rng(2)
    x, v, w = rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal((4, 5))

    def f(lib, t, weight):
        h = lib.tanh(weight @ t)
        return (h * h).sum(0) + lib.sigmoid(t).prod() * math.pi

    with fwAD.dual_level():
        ours = fwAD.unpack_dual(f(engine, fwAD.make_dual(engine.tensor(x), engine.tensor(v)),
                                  engine.tensor(w))).tangent.item()
    tfw = torch.autograd.forward_ad
    with tfw.dual_level():
        theirs = tfw.unpack_dual(f(torch, tfw.make_dual(torch.tensor(x), torch.tensor(v)),
                                   torch.tensor(w))).tangent.item()
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_unpack_dual_is_pytorchs_named_tuple_and_hands_back_the_given_tangent():
    from engine.autograd import forward_ad

    tangent = engine.tensor([1.0, 2.0, 3.0])
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(engine.zeros(3), tangent)
        unpacked = forward_ad.unpack_dual(dual)
        assert type(unpacked).__name__ == "UnpackedDualTensor" and unpacked._fields == ("primal", "tangent")
        assert unpacked.tangent is tangent and unpacked[1] is tangent
        assert forward_ad.unpack_dual(dual * 2).tangent is not tangent
        np.testing.assert_array_equal(forward_ad.unpack_dual(dual * 2).tangent.numpy(), [2.0, 4.0, 6.0])
        widened = forward_ad.make_dual(engine.zeros(3, dtype=engine.float64), tangent)  # cast: a new tensor
        assert forward_ad.unpack_dual(widened).tangent is not tangent
    assert forward_ad.unpack_dual(dual).tangent is None  # the level is closed
