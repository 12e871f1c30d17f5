"""Property-based tests (hypothesis) of the table's rules over random shapes and values.

Values are drawn in [-1, 1] and mapped into each op's valid domain, away from its kinks
(``opcases.to_domain``). Properties: vjp (through autograd) and jvp rule against central
differences; gradients always have their input's shape under broadcasting; linear ops'
vjps are exact adjoints of their forwards.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine import ops
from tests.engine.opcases import Case, cases_for, to_domain
from tests.engine.test_ops_table import (
    ATOL,
    RTOL,
    forward,
    machine_vjp,
    numeric_jvp,
    numeric_vjp,
    rule_jvp,
)

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)


def raw_values(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0, allow_nan=False, width=64))


def _check(case, seed=0):
    """vjp and jvp of ``case`` against central differences."""
    op = ops.table[case.op]
    arrays = case.arrays()
    rng = np.random.default_rng(seed)
    out = forward(op, arrays, case.params)
    g = rng.standard_normal(out.shape)
    flat = list(arrays[0]) if case.variadic else [a for a, d in zip(arrays, case.differentiable()) if d]
    for i, (a, n) in enumerate(zip(machine_vjp(op, case, arrays, g), numeric_vjp(op, case, arrays, g))):
        assert a.shape == np.shape(flat[i])
        np.testing.assert_allclose(a, n, atol=ATOL, rtol=RTOL, err_msg=f"{case.id} vjp input {i}")
    tangents = [rng.standard_normal(np.shape(x)) for x in flat]
    np.testing.assert_allclose(rule_jvp(op, case, arrays, tangents), numeric_jvp(op, case, arrays, tangents),
                               atol=ATOL, rtol=RTOL, err_msg=f"{case.id} jvp")


# ---- elementwise unary ------------------------------------------------------------

UNARY = [name for name in ops.table if cases_for(name)[0].shapes == ((),) and not ops.table[name].nondiff
         and ops.table[name].arity == 1 and name not in ("sum", "mean", "reshape", "expand", "unsqueeze")]


@PROPERTY
@given(name=st.sampled_from(UNARY), data=st.data())
def test_unary_ops_on_random_shapes(name, data):
    template = cases_for(name)[0]
    shape = data.draw(shapes)
    raw = data.draw(raw_values(shape))
    x = to_domain(template.domain(0), raw, template.kinks)
    _check(Case(name, (shape,), template.params, template.domains, template.kinks, values=(x,)))


# ---- broadcasting binary ops --------------------------------------------------------

BINARY = {name: cases_for(name)[0] for name in ("add", "sub", "mul", "div", "pow", "where", "copy_from")}
DOMAIN_OF_BOOL = "bool"


@PROPERTY
@given(name=st.sampled_from(sorted(BINARY)), data=st.data())
def test_broadcasting_ops_sum_gradients_back_to_each_shape(name, data):
    template = BINARY[name]
    arity = len(template.shapes)
    if name == "copy_from":  # src broadcasts to x's shape, not the other way
        x_shape = data.draw(shapes)
        keep = data.draw(st.integers(0, len(x_shape)))  # a suffix of x's shape, some sides set to 1
        ones = data.draw(st.lists(st.booleans(), min_size=keep, max_size=keep))
        src_shape = tuple(1 if one else n for one, n in zip(ones, x_shape[len(x_shape) - keep :]))
        in_shapes = (x_shape, src_shape)
    else:
        in_shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=arity, max_dims=3, max_side=3)).input_shapes
    values = []
    for i, shape in enumerate(in_shapes):
        domain = template.domain(i)
        if domain == DOMAIN_OF_BOOL:
            values.append(data.draw(hnp.arrays(np.bool_, shape)))
        else:
            values.append(to_domain(domain, data.draw(raw_values(shape)), template.kinks))
    _check(Case(name, tuple(in_shapes), {}, template.domains, template.kinks, values=tuple(values)))


@PROPERTY
@given(data=st.data())
def test_maximum_without_ties(data):
    shape_x, shape_y = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3)).input_shapes
    x = to_domain("real", data.draw(raw_values(shape_x)))
    # y stays at least 0.05 away from every value of x: no ties, so maximum is smooth.
    y = to_domain("real", data.draw(raw_values(shape_y)), kinks=tuple(np.unique(x).tolist()))
    for name in ("maximum", "minimum"):
        _check(Case(name, (shape_x, shape_y), {}, values=(x, y)))


# ---- reductions and normalizations over random axes -----------------------------------

REDUCTIONS = {
    "sum": "real", "mean": "real", "prod": "nonzero", "var": "real", "std": "real",
    "logsumexp": "real", "norm": "nonzero",
}


@st.composite
def shape_and_dims(draw, min_dims=1):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=3))
    dims = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape), unique=True))
    return shape, tuple(dims)


@PROPERTY
@given(name=st.sampled_from(sorted(REDUCTIONS)), spec=shape_and_dims(), keepdim=st.booleans(), data=st.data())
def test_reductions_over_random_dims(name, spec, keepdim, data):
    shape, dims = spec
    if name in ("var", "std") and int(np.prod([shape[d] for d in dims])) < 2:
        dims = tuple(range(len(shape)))  # the variance of one element is 0/0
        if int(np.prod(shape)) < 2:
            return
    x = to_domain(REDUCTIONS[name], data.draw(raw_values(shape)))
    if name == "std":  # std is not differentiable where all values are equal: spread them
        x = x + np.arange(x.size).reshape(shape) * 0.3
    _check(Case(name, (shape,), {"dim": dims, "keepdim": keepdim}, values=(x,)))


@PROPERTY
@given(name=st.sampled_from(["softmax", "log_softmax", "cumsum", "max_dim", "min_dim"]),
       spec=shape_and_dims(), data=st.data())
def test_single_axis_ops_on_random_axes(name, spec, data):
    shape, dims = spec
    raw = data.draw(raw_values(shape))
    # Distinct values (a shuffled grid) keep max/min away from ties.
    order = np.argsort(np.argsort(raw.reshape(-1), kind="stable")).reshape(shape)
    x = order * 0.25 + raw * 0.01 if name in ("max_dim", "min_dim") else to_domain("real", raw)
    _check(Case(name, (shape,), {"dim": dims[0]}, values=(x,)))


# ---- linear shape ops: the vjp is exactly the adjoint of the forward ---------------------


def _assert_adjoint(name, x_shape, params, seed):
    """<g, f(u)> == <f^T g, u> for a linear op f, with f^T from the autograd machinery."""
    op = ops.table[name]
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(x_shape)
    case = Case(name, (x_shape,), params, values=(u,))
    out = forward(op, [u], params)
    g = rng.standard_normal(out.shape)
    (vjp,) = machine_vjp(op, case, [u], g)
    assert vjp.shape == x_shape
    np.testing.assert_allclose(np.sum(g * out), np.sum(vjp * u), rtol=1e-10, atol=1e-10)


@PROPERTY
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=3), data=st.data())
def test_permute_and_transpose_are_adjoint(shape, data):
    dims = tuple(data.draw(st.permutations(range(len(shape)))))
    _assert_adjoint("permute", shape, {"dims": dims}, 0)
    dim0, dim1 = data.draw(st.integers(0, len(shape) - 1)), data.draw(st.integers(0, len(shape) - 1))
    _assert_adjoint("transpose", shape, {"dim0": dim0, "dim1": dim1}, 1)
    _assert_adjoint("flip", shape, {"dims": (dim0,)}, 2)


@PROPERTY
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4), data=st.data())
def test_reshape_is_adjoint(shape, data):
    size = int(np.prod(shape))
    first = data.draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0]))
    _assert_adjoint("reshape", shape, {"shape": (first, -1)}, 0)


@PROPERTY
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), data=st.data())
def test_basic_indexing_is_adjoint(shape, data):
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    index = index if isinstance(index, tuple) else (index,)
    _assert_adjoint("getitem", shape, {"index": index}, 0)


@PROPERTY
@given(shape=hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4), data=st.data())
def test_integer_array_indexing_accumulates_repeats(shape, data):
    picks = data.draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=1, max_size=6))
    _assert_adjoint("getitem", shape, {"index": (np.array(picks),)}, 0)


@PROPERTY
@given(shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3), data=st.data())
def test_expand_and_sum_to_size_are_adjoint(shape, data):
    target = data.draw(hnp.broadcastable_shapes(shape, min_dims=len(shape), max_dims=3, max_side=3))
    target = tuple(np.broadcast_shapes(shape, target))
    _assert_adjoint("expand", shape, {"shape": target}, 0)
    _assert_adjoint("sum_to_size", target, {"shape": shape}, 1)
