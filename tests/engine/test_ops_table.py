"""Every entry of the derivative table against float64 central differences.

Parametrised over ``engine.ops.table`` with the inputs of ``opcases``: for
each op and case, the vjp (through the autograd machinery) and the jvp rule
(called directly, ``op.jvp(values, params)`` with ``values = [*tangents, out,
*inputs]``) against central differences; the consistency ``<g, J u> ==
<J^T g, u>``; batched rules (a leading batch axis on ``g`` or on the
tangents equals stacking separate products); double backward with
``gradgradcheck``; and non-differentiable ops yielding no gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import op as op_module
from engine import ops
from engine.autograd import grad, gradgradcheck
from tests import finite_differences
from tests.engine.opcases import CASES, all_cases, cases_for
from tests.floats import assert_close_up_to_summation_order

ATOL, RTOL = 1e-6, 1e-5
BATCH = 3

TABLE = ops.table
DIFFERENTIABLE = [c for c in all_cases(TABLE) if not TABLE[c.op].nondiff and c.smooth]
NONDIFF = [c for c in all_cases(TABLE) if TABLE[c.op].nondiff]


def _ids(cases):
    return [c.id for c in cases]


# ---- helpers: run an op on arrays, with its params normalized as autograd does -------


def normalized(op, arrays, params):
    """The params as apply hands them to the rules: defaults filled in, axes normalized."""
    params = {**op.optional_params, **params}
    if op.normalize is None:
        return params
    if op.variadic:
        return op.normalize(dict(params), tuple(a.shape for a in arrays[0]))
    return op.normalize(dict(params), *(np.shape(a) for a in arrays))


def forward(op, arrays, params):
    """The op's (first) output on float64 arrays."""
    out = op.forward(np, *arrays, **normalized(op, arrays, params))
    if op.extra_outputs:
        out = out[0]
    return np.asarray(out, dtype=np.float64)


def flat_inputs(case, arrays):
    """The differentiable input arrays as one flat list (a variadic op's list is expanded)."""
    if case.variadic:
        return list(arrays[0])
    return [a for a, d in zip(arrays, case.differentiable()) if d]


def rebuild(case, arrays, flat):
    """``arrays`` with the differentiable inputs replaced by ``flat``."""
    if case.variadic:
        return [list(flat)]
    it = iter(flat)
    return [next(it) if d else a for a, d in zip(arrays, case.differentiable())]


def numeric_vjp(op, case, arrays, g):
    """J^T g by central differences, one array per differentiable input."""
    jacobians = finite_differences.jacobian(lambda flat: forward(op, rebuild(case, arrays, flat), case.params),
                                            flat_inputs(case, arrays))[0]
    return [np.tensordot(g, jacobian, axes=np.ndim(g)) for jacobian in jacobians]


def numeric_jvp(op, case, arrays, tangents):
    """J u by central differences."""
    return finite_differences.directional_derivative(
        lambda flat: forward(op, rebuild(case, arrays, flat), case.params), flat_inputs(case, arrays), tangents)


def tensors_of(case, arrays):
    """Engine tensors for the inputs (floating ones require grad) and the flat list of those."""
    if case.variadic:
        xs = [engine.tensor(a, requires_grad=True) for a in arrays[0]]
        return [xs], xs
    args, leaves = [], []
    for a, d in zip(arrays, case.differentiable()):
        t = engine.tensor(a, requires_grad=d)
        args.append(t)
        if d:
            leaves.append(t)
    return args, leaves


def call(op, args, params):
    out = op(*args, **params)
    return out[0] if op.extra_outputs else out


def machine_vjp(op, case, arrays, g, batched=False):
    """J^T g through engine.autograd.grad (the recorded graph and the vjp rules)."""
    args, leaves = tensors_of(case, arrays)
    out = call(op, args, case.params)
    grads = grad(out, leaves, grad_outputs=engine.tensor(g, device=out.device), is_grads_batched=batched,
                 allow_unused=True)
    return [np.zeros((BATCH,) * batched + leaf.shape) if r is None else r.detach().numpy()
            for r, leaf in zip(grads, leaves)]


def rule_jvp(op, case, arrays, tangents):
    """J u from the op's jvp rule, called as forward mode calls it."""
    params = normalized(op, arrays, case.params)
    out = forward(op, arrays, case.params)
    if case.variadic:
        values = [list(tangents), out, arrays[0]]
    else:
        it = iter(tangents)
        full = [next(it) if d else np.zeros(np.shape(a)) for a, d in zip(arrays, case.differentiable())]
        values = [*full, out, *arrays]
    return np.asarray(op.jvp(values, params), dtype=np.float64)


def random_like(rng, arrays):
    return [rng.standard_normal(np.shape(a)) for a in arrays]


# ---- coverage ------------------------------------------------------------------


def test_every_table_op_has_cases():
    missing = [name for name in TABLE if name not in CASES]
    assert not missing, f"ops without a case in tests/engine/opcases.py: {missing}"
    stale = [name for name in CASES if name not in TABLE]
    assert not stale, f"opcases.py describes ops the table no longer has: {stale}"


@pytest.mark.parametrize("name", list(TABLE))
def test_op_forward_runs_on_its_cases(name):
    op = TABLE[name]
    for case in cases_for(name):
        arrays = case.arrays()
        args, _ = tensors_of(case, arrays)
        out = call(op, args, case.params)
        expected = op.forward(np, *arrays, **normalized(op, arrays, case.params))
        expected = np.asarray(expected[0] if op.extra_outputs else expected)
        got = out.detach().numpy()
        if out.device.type == "cpu" or expected.dtype.kind not in "fc":
            np.testing.assert_array_equal(got, expected)  # the same numpy call both times
        else:  # with --device cuda, cupy's kernels: their own roundings and summation orders
            assert_close_up_to_summation_order(got, expected, err_msg=case.id)


# ---- reverse mode ----------------------------------------------------------------


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_ids(DIFFERENTIABLE))
def test_vjp_matches_central_differences(case):
    op = TABLE[case.op]
    arrays = case.arrays()
    rng = np.random.default_rng(1)
    g = rng.standard_normal(forward(op, arrays, case.params).shape)
    analytic = machine_vjp(op, case, arrays, g)
    numeric = numeric_vjp(op, case, arrays, g)
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        assert a.shape == n.shape, f"{case.id}: gradient of input {i} has shape {a.shape}, input {n.shape}"
        np.testing.assert_allclose(a, n, atol=ATOL, rtol=RTOL, err_msg=f"{case.id}: input {i}")


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_ids(DIFFERENTIABLE))
def test_jvp_rule_matches_central_differences(case):
    op = TABLE[case.op]
    assert op.jvp is not None, f"{case.op} has no jvp rule"
    arrays = case.arrays()
    tangents = random_like(np.random.default_rng(2), flat_inputs(case, arrays))
    analytic = rule_jvp(op, case, arrays, tangents)
    numeric = numeric_jvp(op, case, arrays, tangents)
    assert analytic.shape == numeric.shape, f"{case.id}: jvp shape {analytic.shape}, output {numeric.shape}"
    np.testing.assert_allclose(analytic, numeric, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_ids(DIFFERENTIABLE))
def test_vjp_and_jvp_are_adjoint(case):
    """<g, J u> == <J^T g, u>: the two rules describe the same Jacobian."""
    op = TABLE[case.op]
    arrays = case.arrays()
    rng = np.random.default_rng(3)
    tangents = random_like(rng, flat_inputs(case, arrays))
    g = rng.standard_normal(forward(op, arrays, case.params).shape)
    left = np.sum(g * rule_jvp(op, case, arrays, tangents))
    right = sum(np.sum(v * u) for v, u in zip(machine_vjp(op, case, arrays, g), tangents))
    assert left == pytest.approx(right, rel=1e-9, abs=1e-9)


# ---- batched (vectorized) rules -------------------------------------------------


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_ids(DIFFERENTIABLE))
def test_batched_vjp_equals_stacked_vjps(case):
    op = TABLE[case.op]
    arrays = case.arrays()
    out_shape = forward(op, arrays, case.params).shape
    gs = np.random.default_rng(4).standard_normal((BATCH, *out_shape))
    batched = machine_vjp(op, case, arrays, gs, batched=True)
    separate = [machine_vjp(op, case, arrays, g) for g in gs]
    for i, b in enumerate(batched):
        np.testing.assert_allclose(b, np.stack([s[i] for s in separate]), atol=1e-12, rtol=1e-12,
                                   err_msg=f"{case.id}: input {i}")


def _batched_tangent(op, t, out_ndim):
    """A batch of tangents for one input. For a broadcasting op the input's axes are aligned
    with the output's trailing axes first (as forward mode must do), so the batch axis stays
    in front."""
    if op.broadcast and t.ndim - 1 < out_ndim:
        return t.reshape((t.shape[0],) + (1,) * (out_ndim - t.ndim + 1) + t.shape[1:])
    return t


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_ids(DIFFERENTIABLE))
def test_batched_jvp_equals_stacked_jvps(case):
    op = TABLE[case.op]
    arrays = case.arrays()
    flat = flat_inputs(case, arrays)
    out_ndim = forward(op, arrays, case.params).ndim
    rng = np.random.default_rng(5)
    tangents = [rng.standard_normal((BATCH, *np.shape(x))) for x in flat]
    if op.name == "index_put":
        pytest.skip("index_put's values broadcast against x[index], not x: no rank alignment applies")
    batched_in = [_batched_tangent(op, t, out_ndim) for t in tangents]
    batched = rule_jvp(op, case, arrays, batched_in)
    separate = np.stack([rule_jvp(op, case, arrays, [t[b] for t in tangents]) for b in range(BATCH)])
    np.testing.assert_allclose(batched, separate, atol=1e-12, rtol=1e-12)


# ---- double backward -----------------------------------------------------------


def _small_cases():
    """Per op, the first two cases with at most 6 input elements (gradgradcheck is O(n^2))."""
    chosen = []
    for name in TABLE:
        if TABLE[name].nondiff:
            continue
        cases = CASES.get(name, [])
        small = [c for c in cases if c.smooth and _numel(c) <= 6]
        chosen.extend(small[:2] if small else cases[:1])
    return chosen


def _numel(case):
    return sum(np.size(a) for a in flat_inputs(case, case.arrays()))


GRADGRAD = _small_cases()


@pytest.mark.parametrize("case", GRADGRAD, ids=_ids(GRADGRAD))
def test_gradgradcheck(case):
    op = TABLE[case.op]
    arrays = case.arrays()
    args, leaves = tensors_of(case, arrays)

    if case.variadic:
        def fn(*xs):
            return call(op, [list(xs)], case.params)

        inputs = tuple(leaves)
    else:
        def fn(*xs):
            return call(op, xs, case.params)

        inputs = tuple(args)
    assert gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# ---- non-differentiable ops ----------------------------------------------------


@pytest.mark.parametrize("case", NONDIFF, ids=_ids(NONDIFF))
def test_nondiff_outputs_do_not_require_grad(case):
    op = TABLE[case.op]
    arrays = case.arrays()
    args, leaves = tensors_of(case, arrays)
    out = call(op, args, case.params)
    assert out.grad_fn is None and not out.requires_grad
    if leaves:  # float inputs required grad: still nothing to differentiate
        assert any(t.requires_grad for t in leaves)


def test_nondiff_ops_declare_no_vjp():
    for name, op in TABLE.items():
        if op.nondiff:
            assert op.vjp == (), name


# ---- dtypes and the Tensor path of the rules ------------------------------------


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_ids(DIFFERENTIABLE))
def test_float32_inputs_give_float32_outputs_and_gradients(case):
    """No rule or forward may widen float32 to float64 (a stray float64 constant would)."""
    op = TABLE[case.op]

    def single(a):
        return a.astype(np.float32) if a.dtype == np.float64 else a

    arrays = [[single(a) for a in arrays] if case.variadic else single(arrays) for arrays in case.arrays()]
    args, leaves = tensors_of(case, arrays)
    out = call(op, args, case.params)
    if "dtype" not in case.params:
        assert out.dtype == engine.float32
    grads = grad(out, leaves, grad_outputs=engine.ones_like(out), allow_unused=True)
    for leaf, g in zip(leaves, grads):
        if g is not None:
            assert g.dtype == engine.float32 and g.shape == leaf.shape


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=_ids(DIFFERENTIABLE))
def test_batched_vjp_on_tensors_equals_batched_vjp_on_arrays(case):
    """With create_graph=True the rules run on Tensors (recorded); batched, as vectorized
    Hessians use them. The values must equal the plain (array) pass."""
    op = TABLE[case.op]
    arrays = case.arrays()
    out_shape = forward(op, arrays, case.params).shape
    gs = np.random.default_rng(6).standard_normal((BATCH, *out_shape))
    args, leaves = tensors_of(case, arrays)
    out = call(op, args, case.params)
    recorded = grad(out, leaves, grad_outputs=engine.tensor(gs, device=out.device), is_grads_batched=True,
                    allow_unused=True, create_graph=True)
    plain = machine_vjp(op, case, arrays, gs, batched=True)
    for r, p in zip(recorded, plain):
        values = np.zeros_like(p) if r is None else r.detach().numpy()
        np.testing.assert_allclose(values, p, atol=1e-12, rtol=1e-12)


# ---- result-size estimates (what the budget checks before an op runs) --------------------


@pytest.mark.parametrize("name", list(TABLE))
def test_size_estimate_bounds_the_result(name):
    """An entry's ``estimate`` is the result's size (an upper bound for the broadcast default,
    which ``linear`` uses); an op without one never makes more than its largest input."""
    op = TABLE[name]
    for case in cases_for(name):
        arrays = case.arrays()
        size = forward(op, arrays, case.params).size
        shapes = [np.shape(a) for a in (arrays[0] if case.variadic else arrays) if a is not None]
        estimate = None if op.estimate is None else op.estimate(shapes, normalized(op, arrays, case.params))
        if estimate is None:
            assert size <= max(int(np.prod(s)) for s in shapes), (case.id, size)
        elif op.estimate is op_module.broadcast_size:
            assert estimate >= size, (case.id, estimate, size)
        else:
            assert estimate == size, (case.id, estimate, size)
