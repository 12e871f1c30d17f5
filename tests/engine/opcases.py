"""Test inputs for every op of the derivative table: shapes, valid domains and params.

``CASES[name]`` is a list of ``Case`` objects for the table entry ``name``.
Each case says the shapes of the op's inputs (scalar, vector, matrix and
broadcasting pairs), the domain each input's values come from (so ``log``
gets positive numbers and ``maximum`` no ties), the op's keyword params,
and the points where the op has a kink (inputs are kept away from them, so
central differences are meaningful). Other test modules import this:

    from tests.engine.opcases import CASES, cases_for
    for case in cases_for("sin"):
        x, = case.arrays(seed=0)            # float64 numpy arrays
        out = ops.table["sin"](x, **case.params)

A new op in ``engine.ops.table`` without an entry here makes
``cases_for`` raise, so the table-driven tests fail until it is covered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# ---- domains ----------------------------------------------------------------
# Each maps uniform draws to values where the op is defined and smooth.


def _real(rng, shape):
    return rng.uniform(-1.5, 1.5, shape)


def _positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def _nonzero(rng, shape):
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)


def _unit(rng, shape):
    return rng.uniform(-0.8, 0.8, shape)


def _small(rng, shape):
    return rng.uniform(-1.0, 1.0, shape)


def _distinct(rng, shape, offset=0.0):
    """Values at least 0.2 apart (no ties, so max/min/sort are smooth): a shuffled grid."""
    n = int(np.prod(shape, dtype=int))
    grid = (rng.permutation(n) - n / 2) * 0.25 + offset + rng.uniform(0.0, 0.05, n)
    return grid.reshape(shape)


def _distinct_shifted(rng, shape):
    """Like ``distinct`` but on a grid offset by half a step: never within 0.07 of it."""
    return _distinct(rng, shape, offset=0.125)


def _distinct_abs(rng, shape):
    """Distinct magnitudes with random signs (for the inf-norm)."""
    n = int(np.prod(shape, dtype=int))
    magnitude = 0.3 + rng.permutation(n) * 0.25 + rng.uniform(0.0, 0.05, n)
    return (rng.choice([-1.0, 1.0], n) * magnitude).reshape(shape)


def _unit_interval(rng, shape):
    """Probabilities kept away from 0 and 1 (binary cross-entropy's logs)."""
    return rng.uniform(0.1, 0.9, shape)


def _bool(rng, shape):
    return rng.uniform(size=shape) < 0.5


DOMAINS = {
    "real": _real,
    "positive": _positive,
    "nonzero": _nonzero,
    "unit": _unit,
    "small": _small,
    "distinct": _distinct,
    "distinct_shifted": _distinct_shifted,
    "distinct_abs": _distinct_abs,
    "unit_interval": _unit_interval,
    "bool": _bool,
}

# Range of raw values each domain accepts from a property-based generator (hypothesis draws
# in [-1, 1]; ``to_domain`` maps them here).
DOMAIN_BOUNDS = {
    "real": (-1.5, 1.5),
    "positive": (0.5, 2.0),
    "unit": (-0.8, 0.8),
    "small": (-1.0, 1.0),
}


def to_domain(domain: str, raw, kinks=()):
    """Map raw values in [-1, 1] into ``domain`` (for hypothesis), keeping clear of kinks."""
    raw = np.asarray(raw, dtype=np.float64)
    if domain == "nonzero":
        values = np.where(raw >= 0, 1.0, -1.0) * (0.5 + 1.5 * np.abs(raw))
    else:
        low, high = DOMAIN_BOUNDS[domain]
        values = low + (raw + 1) / 2 * (high - low)
    return avoid_kinks(values, kinks)


def avoid_kinks(values, kinks, margin=0.05):
    """Move values within ``margin`` of a kink to ``2 * margin`` beyond it."""
    values = np.array(values, dtype=np.float64, copy=True)
    for k in kinks:
        near = np.abs(values - k) < margin
        values[near] = k + np.where(values[near] >= k, 2 * margin, -2 * margin)
    return values


# ---- cases ------------------------------------------------------------------


def input_domain(domains: tuple, i: int) -> str:
    """The domain input ``i`` is drawn from: its own, else the last one given, else "real"."""
    return domains[i] if i < len(domains) else (domains[-1] if domains else "real")


@dataclass(frozen=True)
class Case:
    """One way to call a table op: input shapes and domains, params, kinks to avoid.

    For a variadic op (``cat``, ``stack``) ``shapes`` has one entry, the tuple
    of the list's shapes. ``values`` pins inputs to given arrays (e.g. ``prod``
    with zeros). ``smooth=False`` marks cases that finite differences cannot
    check (kept for forward/shape tests only).
    """

    op: str
    shapes: tuple
    params: dict = field(default_factory=dict)
    domains: tuple = ()
    kinks: tuple = ()
    values: tuple | None = None
    smooth: bool = True
    label: str = ""

    @property
    def variadic(self) -> bool:
        return self.op in VARIADIC

    def domain(self, i: int) -> str:
        return input_domain(self.domains, i)

    def arrays(self, seed: int = 0) -> list:
        """The inputs as float64 (or bool) numpy arrays; a variadic op gets one list."""
        rng = np.random.default_rng(seed)
        if self.values is not None:
            return [np.array(v, copy=True) for v in self.values]
        if self.variadic:
            return [[self._draw(rng, s, self.domain(0)) for s in self.shapes[0]]]
        return [self._draw(rng, s, self.domain(i)) for i, s in enumerate(self.shapes)]

    def _draw(self, rng, shape, domain):
        values = DOMAINS[domain](rng, shape)
        if values.dtype == bool:
            return values
        return avoid_kinks(values, self.kinks).reshape(shape)

    def differentiable(self) -> list[bool]:
        """Which inputs are floating point (and so get gradients)."""
        if self.variadic:
            return [True]
        return [self.domain(i) != "bool" for i in range(len(self.shapes))]

    @property
    def id(self) -> str:
        if self.label:
            return f"{self.op}-{self.label}"
        shapes = "x".join(_shape_text(s) for s in self.shapes) if not self.variadic else "+".join(
            _shape_text(s) for s in self.shapes[0]
        )
        params = ",".join(f"{k}={_param_text(v)}" for k, v in self.params.items())
        return f"{self.op}-{shapes}" + (f"-{params}" if params else "")


def _shape_text(shape) -> str:
    return "(" + ",".join(str(n) for n in shape) + ")"


def _param_text(value) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(_param_text(v) for v in value) + ")"
    if isinstance(value, np.ndarray):
        return "arr"
    if isinstance(value, slice):
        return f"{value.start}:{value.stop}"
    if value is Ellipsis:
        return "..."
    return str(value)


VARIADIC = {"cat", "stack"}

UNARY_SHAPES = ((), (4,), (2, 3))
BINARY_SHAPES = (((), ()), ((4,), (4,)), ((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((), (2, 3)))

CASES: dict[str, list[Case]] = {}


def _add(case: Case):
    CASES.setdefault(case.op, []).append(case)


def unary(name, domain="real", params=({},), kinks=(), shapes=UNARY_SHAPES):
    for p in params:
        for shape in shapes:
            _add(Case(name, (shape,), dict(p), (domain,), kinks))


def binary(name, domains=("real", "real"), shapes=BINARY_SHAPES):
    for pair in shapes:
        _add(Case(name, pair, {}, domains))


def case(name, *shapes, domains=("real",), **params):
    _add(Case(name, tuple(shapes), params, domains))


# elementwise: unary
for _name in ("neg", "exp", "expm1", "sin", "cos", "tanh", "sigmoid", "erf", "clone"):
    unary(_name)
for _name in ("log", "sqrt", "rsqrt"):
    unary(_name, "positive")
unary("log1p", "unit")
unary("tan", "unit")
unary("reciprocal", "nonzero")
unary("relu", kinks=(0.0,))
unary("abs", kinks=(0.0,))
unary("sign", kinks=(0.0,))
unary("gelu", params=({"approximate": "none"}, {"approximate": "tanh"}))
unary("softplus", params=({}, {"beta": 2.0}), shapes=((4,), (2, 3)))
unary("softplus", params=({"beta": 1.0, "threshold": 0.5},), kinks=(0.5,), shapes=((2, 3),))
# the activations' backward ops: (grad, y or x), broadcasting like the activations' own grads
_GRAD_SHAPES = (((4,), (4,)), ((2, 3), (2, 3)), ((2, 3), (3,)), ((), (2, 3)))
for _name in ("tanh_backward", "sigmoid_backward"):
    binary(_name, shapes=_GRAD_SHAPES)
for _pair in _GRAD_SHAPES:
    _add(Case("threshold_backward", _pair, {"threshold": 0.0}, kinks=(0.0,)))
    _add(Case("gelu_backward", _pair, {"approximate": "none"}))
    _add(Case("gelu_backward", _pair, {"approximate": "tanh"}))
    _add(Case("softplus_backward", _pair, {"beta": 2.0, "threshold": 20.0}))
_add(Case("threshold_backward", ((2, 3), (2, 3)), {"threshold": 0.5}, kinks=(0.5,)))
_add(Case("softplus_backward", ((2, 3), (2, 3)), {"beta": 1.0, "threshold": 0.5}, kinks=(0.5,)))
unary("clamp", params=({"min": -0.5, "max": 0.5},), kinks=(-0.5, 0.5))
unary("clamp", params=({"min": -0.3},), kinks=(-0.3,), shapes=((2, 3),))
unary("clamp", params=({"max": 0.2},), kinks=(0.2,), shapes=((2, 3),))
unary("pow_scalar", params=({"exponent": 2}, {"exponent": 3}, {"exponent": 0}))
unary("pow_scalar", "positive", params=({"exponent": 0.5}, {"exponent": -1.5}), shapes=((4,), (2, 3)))
unary("to_dtype", params=({"dtype": "float64"},))
unary("to_device", params=({"device": "cpu"},))
unary("fill", params=({"value": 2.0},), shapes=((4,), (2, 3)))

# elementwise: binary (broadcasting)
for _name in ("add", "sub", "mul"):
    binary(_name)
unary("rsub", params=({"other": 2.0}, {"other": -1}))
unary("rpow", params=({"base": 2.0}, {"base": 0.5}))
binary("div", ("real", "nonzero"))
for _pair in BINARY_SHAPES[1:4]:
    for _mode in ("floor", "trunc"):
        _add(Case("div_rounded", _pair, {"rounding_mode": _mode}, ("real", "nonzero")))
binary("pow", ("positive", "small"))
binary("maximum", ("distinct", "distinct_shifted"))
binary("minimum", ("distinct", "distinct_shifted"))
for _shapes in (((2, 3), (2, 3), (2, 3)), ((2, 3), (3,), ()), ((), (2, 1), (1, 3)), ((4,), (4,), (4,))):
    _add(Case("where", _shapes, {}, ("bool", "real", "real")))
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    binary(_name, shapes=BINARY_SHAPES[2:5])
binary("logical_and", ("bool", "bool"), shapes=BINARY_SHAPES[2:5])
binary("logical_or", ("bool", "bool"), shapes=BINARY_SHAPES[2:5])
unary("logical_not", "bool")
unary("isnan")
unary("isfinite")

# linear algebra
for _pair in (((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)), ((2, 2, 3), (3, 4)),
              ((2, 2, 3), (2, 3, 4)), ((2, 1, 2, 3), (3, 3, 2))):
    _add(Case("matmul", _pair))
case("dot", (3,), (3,))
case("outer", (3,), (4,))
case("outer", (1,), (2,))
for _shapes in (((2, 3), (4, 3), (4,)), ((3,), (4, 3), (4,)), ((2, 2, 3), (4, 3), ())):
    _add(Case("linear", _shapes))

# reductions
for _name in ("sum", "mean"):
    case(_name, ())
    case(_name, (4,))
    case(_name, (2, 3), dim=0)
    case(_name, (2, 3), dim=-1, keepdim=True)
    case(_name, (2, 3), dim=(0, 1), keepdim=True)
    case(_name, (2, 3, 2), dim=(0, 2))
case("prod", (4,), domains=("nonzero",))
case("prod", (2, 3), domains=("nonzero",), dim=1)
case("prod", (2, 3), domains=("nonzero",), dim=0, keepdim=True)
_add(Case("prod", ((2, 3),), {"dim": 1}, values=(np.array([[0.0, 1.5, -2.0], [0.7, 0.0, 0.0]]),), label="zeros-dim1"))
_add(Case("prod", ((4,),), {}, values=(np.array([1.2, 0.0, -0.8, 1.5]),), label="one-zero"))
for _name in ("var", "std"):
    case(_name, (4,))
    case(_name, (2, 3), dim=1)
    case(_name, (2, 3), dim=0, correction=0.0, keepdim=True)
    case(_name, (2, 3), dim=(0, 1), correction=1.0)
for _name in ("amax", "amin"):
    case(_name, (4,), domains=("distinct",))
    case(_name, (2, 3), domains=("distinct",), dim=1)
    case(_name, (2, 3), domains=("distinct",), dim=(0, 1), keepdim=True)
for _name in ("max", "min"):
    case(_name, (4,), domains=("distinct",))
    case(_name, (2, 3), domains=("distinct",))
for _name in ("max_dim", "min_dim"):
    case(_name, (4,), domains=("distinct",), dim=0)
    case(_name, (2, 3), domains=("distinct",), dim=1)
    case(_name, (2, 3), domains=("distinct",), dim=0, keepdim=True)
case("first_extreme_mask", (2, 3), domains=("distinct",), dim=1)
case("first_extreme_mask", (2, 3), domains=("distinct",), dim=0, largest=False)
for _name in ("argmax", "argmin"):
    case(_name, (2, 3), domains=("distinct",))
    case(_name, (2, 3), domains=("distinct",), dim=1, keepdim=True)
for _name in ("all", "any"):
    case(_name, (2, 3), domains=("bool",))
    case(_name, (2, 3), domains=("bool",), dim=0)
case("norm", (4,))
case("norm", (2, 3))
case("norm", (2, 3), dim=1, keepdim=True)
case("norm", (2, 3), domains=("nonzero",), p=1.0)
case("norm", (2, 3), domains=("distinct_abs",), p=float("inf"), dim=1)
case("norm", (4,), domains=("nonzero",), p=3.0)
case("logsumexp", (4,), dim=0)
case("logsumexp", (2, 3), dim=1)
case("logsumexp", (2, 3), dim=(0, 1), keepdim=True)
for _name in ("softmax", "log_softmax"):
    case(_name, (4,), dim=0)
    case(_name, (2, 3), dim=1)
    case(_name, (2, 3), dim=0)
case("flip", (4,), dims=(0,))
case("flip", (2, 3), dims=(0, 1))
case("flip", (2, 3), dims=(1,))
case("cumsum", (4,), dim=0)
case("cumsum", (2, 3), dim=1)
case("cumsum", (2, 3), dim=0)

# shape and indexing
case("reshape", (2, 3), shape=(6,))
case("reshape", (2, 3), shape=(3, -1))
case("reshape", (), shape=(1, 1))
case("reshape", (6,), shape=(2, 3))
case("unsafe_view", (2, 3), shape=(3, 2))
case("unsafe_view", (2, 3, 2), shape=(2, -1))
case("expand", (3,), shape=(2, 3))
case("expand", (2, 1), shape=(2, 3))
case("expand", (), shape=(2, 2))
case("expand", (1, 3), shape=(2, 2, 3))
case("sum_to_size", (2, 3), shape=(3,))
case("sum_to_size", (2, 3), shape=(1, 3))
case("sum_to_size", (2, 3), shape=(2, 1))
case("sum_to_size", (2, 3), shape=())
case("permute", (2, 3), dims=(1, 0))
case("permute", (2, 3, 2), dims=(2, 0, 1))
case("transpose", (2, 3), dim0=0, dim1=1)
case("transpose", (2, 3, 2), dim0=0, dim1=2)
case("t", (2, 3))
case("t", (4,))
case("t", ())
case("squeeze", (1, 3), dim=None)
case("squeeze", (2, 1, 3), dim=1)
case("squeeze", (1, 3), dim=0)
case("squeeze", (3,), dim=0)
case("squeeze", (2, 1, 3), dim=-2)  # one axis: stays an int (SqueezeBackward1)
case("squeeze", (2, 3), dim=1)  # not of size 1: nothing dropped
case("squeeze", (), dim=0)
case("unsqueeze", (3,), dim=0)
case("unsqueeze", (2, 3), dim=-1)
case("unsqueeze", (), dim=0)
case("tile", (3,), reps=(2,))
case("tile", (3,), reps=(2, 1))
case("tile", (2, 3), reps=(2, 2))
_MASK = np.array([[True, False, True], [False, True, False]])
case("getitem", (4,), index=(1,))
case("getitem", (4,), index=(slice(1, 3),))
case("getitem", (2, 3), index=(1,))
case("getitem", (2, 3), index=(slice(None), 1))
case("getitem", (2, 3), index=(Ellipsis, None))
case("getitem", (2, 3), index=(0, slice(1, None)))
case("getitem", (4,), index=(np.array([0, 2, 0]),))
case("getitem", (2, 3), index=(_MASK,))
case("getitem", (2, 3), index=(np.array([1, 0]), slice(0, 2)))
# getitem_adjoint takes getitem's normalized index (a leading Ellipsis, every axis explicit).
case("getitem_adjoint", (3,), shape=(2, 3), index=(Ellipsis, 1, slice(None)))
case("getitem_adjoint", (3,), shape=(4,), index=(Ellipsis, np.array([0, 2, 0])))
case("getitem_adjoint", (2, 2), shape=(2, 3), index=(Ellipsis, slice(None), slice(1, 3)))
case("index_put", (2, 3), (3,), index=(1,))
case("index_put", (4,), (), index=(np.array([0, 2]),))
case("index_put", (2, 3), (2, 2), index=(slice(None), slice(0, 2)))
case("index_put", (2, 3), (3,), index=(_MASK,))
case("index_put", (3,), (1,), index=(1,))  # values with a leading 1 dropped by the assignment
case("index_put", (2, 3), (1, 3), index=(slice(0, 2),))
# take_flat and copy_slices: flat positions of a view (a column, transposed; a repeated one)
case("take_flat", (2, 3), positions=np.array([[1, 4], [2, 5]]), shape=(2, 3))
case("take_flat", (4,), positions=np.array([3, 0, 3]), shape=(4,))
case("take_flat", (2, 3), positions=np.array(4), shape=(2, 3))
case("copy_slices", (2, 3), (2, 2), positions=np.array([[1, 4], [2, 5]]), shape=(2, 3))
case("copy_slices", (2, 3), (), positions=np.array(4), shape=(2, 3))
case("copy_slices", (4,), (4,), positions=np.array([3, 2, 1, 0]), shape=(4,))
_add(Case("cat", (((2, 3), (1, 3)),), {"dim": 0}))
_add(Case("cat", (((2,), (3,)),), {"dim": 0}))
_add(Case("cat", (((2, 3), (2, 2)),), {"dim": 1}))
_add(Case("stack", (((3,), (3,)),), {"dim": 0}))
_add(Case("stack", (((2, 3), (2, 3), (2, 3)),), {"dim": -1}))
_add(Case("stack", (((), ()),), {"dim": 0}))

# copies
binary("copy_from", shapes=(((2, 3), (3,)), ((4,), (4,)), ((2, 3), ())))

# 0-d tensors with a dim: PyTorch lets dim 0 and -1 name an axis of size 1 that numpy's array
# lacks; the table normalizes it to no axis, (), which every rule must take (batched too).
for _name in ("sum", "mean", "prod", "amax", "amin", "logsumexp", "max_dim", "min_dim", "first_extreme_mask"):
    case(_name, (), domains=("nonzero",), dim=0)
case("sum", (), dim=-1, keepdim=True)
case("mean", (), dim=(0,), keepdim=True)
case("var", (), dim=0, correction=0.0)
case("std", (), dim=-1, correction=0.0, keepdim=True)
case("norm", (), domains=("nonzero",), dim=0)
case("norm", (), domains=("nonzero",), p=1.0, dim=-1, keepdim=True)
case("argmax", (), dim=0)
case("argmin", (), dim=-1, keepdim=True)
for _name in ("softmax", "log_softmax", "cumsum"):
    case(_name, (), dim=0)
    case(_name, (), dim=-1)
case("flip", (), dims=(0,))
case("transpose", (), dim0=0, dim1=-1)


# nn layers: activations
unary("leaky_relu", params=({"negative_slope": 0.2},), kinks=(0.0,))
for _pair in _GRAD_SHAPES:
    _add(Case("leaky_relu_backward", _pair, {"negative_slope": 0.2}, kinks=(0.0,)))
unary("elu", params=({}, {"alpha": 0.5, "scale": 1.5, "input_scale": 2.0}), kinks=(0.0,))
unary("silu")
# convolution: (x, w, b) shapes with stride, (before, after) padding pairs or PyTorch's forms,
# dilation and groups; its two derivative ops get (grad, w) and (x, grad) shapes to match.
_CONVOLUTIONS = (
    ((1, 2, 4, 4), (3, 2, 2, 2), (3,), {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}),
    ((2, 2, 5, 4), (2, 1, 3, 2), (2,), {"stride": (2, 1), "padding": 1, "dilation": (1, 2), "groups": 2}),
    ((1, 1, 4, 4), (2, 1, 2, 2), (2,), {"stride": 1, "padding": "same", "dilation": 1, "groups": 1}),
    ((2, 2, 5), (3, 2, 3), (3,), {"stride": (2,), "padding": (1,), "dilation": (1,), "groups": 1}),
)
for _x, _w, _b, _params in _CONVOLUTIONS:
    _add(Case("convolution", (_x, _w, _b), dict(_params)))
_CONV_GRADS = (
    ((1, 3, 3, 3), (3, 2, 2, 2), (1, 2, 4, 4), {"stride": (1, 1), "padding": ((0, 0), (0, 0)), "dilation": (1, 1)}, 1),
    ((2, 2, 3, 4), (2, 1, 3, 2), (2, 2, 5, 4), {"stride": (2, 1), "padding": ((1, 1), (1, 1)), "dilation": (1, 2)}, 2),
    ((2, 3, 3), (3, 2, 3), (2, 2, 5), {"stride": (2,), "padding": ((1, 1),), "dilation": (1,)}, 1),
)
for _grad, _w, _x, _params, _groups in _CONV_GRADS:
    _add(Case("conv_input_grad", (_grad, _w), {"size": _x[2:], "groups": _groups, **_params}))
    _add(Case("conv_weight_grad", (_x, _grad), {"kernel": _w[2:], "groups": _groups, **_params}))
# pooling: distinct values, so each window's maximum is clear of the others
case("max_pool2d", (1, 2, 4, 4), domains=("distinct",), kernel_size=2)
case("max_pool2d", (2, 1, 5, 5), domains=("distinct",), kernel_size=3, stride=2, padding=1)
case("max_pool2d", (1, 1, 5, 6), domains=("distinct",), kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1),
     ceil_mode=True)
_MAX_POOL = {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "ceil_mode": False}
_add(Case("max_pool2d_backward", ((2, 1, 3, 3), (2, 1, 5, 5)), dict(_MAX_POOL), ("real", "distinct")))
_add(Case("max_pool2d_select", ((2, 1, 5, 5), (2, 1, 5, 5)), dict(_MAX_POOL), ("real", "distinct")))
case("avg_pool2d", (1, 2, 4, 4), kernel_size=2)
case("avg_pool2d", (2, 1, 5, 5), kernel_size=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True)
case("avg_pool2d", (1, 1, 5, 6), kernel_size=(2, 3), stride=(2, 1), divisor_override=4)
_AVG_POOL = {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1), "ceil_mode": True,
             "count_include_pad": False, "divisor_override": None}
case("avg_pool2d_backward", (2, 1, 3, 3), size=(5, 5), **_AVG_POOL)
case("adaptive_avg_pool2d", (1, 2, 5, 4), output_size=(2, 3))
case("adaptive_avg_pool2d", (2, 1, 3, 3), output_size=(5, None))
case("adaptive_avg_pool2d_backward", (1, 2, 2, 3), size=(5, 4), output_size=(2, 3))
# normalization: x, weight, bias (and the running statistics for eval mode)
for _x in ((4, 2), (3, 2, 2), (2, 2, 2, 2)):
    _add(Case("batch_norm", (_x, (2,), (2,)), {"eps": 1e-3}))
    _add(Case("batch_norm_eval", (_x, (2,), (2,), (2,), (2,)), {"eps": 1e-3},
              ("real", "real", "real", "real", "positive")))
case("layer_norm", (3, 4), (4,), (4,), normalized_shape=(4,), eps=1e-3)
case("layer_norm", (2, 2, 3), (2, 3), (2, 3), normalized_shape=(2, 3))
case("embedding", (5, 3), indices=np.array([[0, 2, 4], [2, 2, 1]]))
# padding_idx's row gets no gradient by definition (PyTorch's), not by calculus: no central differences.
_add(Case("embedding", ((4, 2),), {"indices": np.array([3, 1, 1, 0]), "padding_idx": 1}, smooth=False))

# fused losses: inputs of one shape, each reduction
for _reduction in ("mean", "sum", "none"):
    case("mse_loss", (2, 3), (2, 3), reduction=_reduction)
    _add(Case("huber_loss", ((2, 3), (2, 3)), {"reduction": _reduction, "delta": 0.8}, ("real", "small")))
    _add(Case("smooth_l1_loss", ((4,), (4,)), {"reduction": _reduction, "beta": 0.5}, ("real", "small")))
    _add(Case("binary_cross_entropy", ((2, 3), (2, 3), (2, 3)), {"reduction": _reduction},
              ("unit_interval", "unit_interval", "positive")))
    _add(Case("binary_cross_entropy_with_logits", ((2, 3),) * 4, {"reduction": _reduction},
              ("real", "unit_interval", "positive", "positive")))
    case("nll_loss", (3, 4), target=np.array([0, 3, 1]), weight=None, ignore_index=-100, reduction=_reduction)
case("nll_loss", (4,), target=np.array(2), weight=None, ignore_index=-100, reduction="mean")
case("nll_loss", (2, 3, 2), target=np.array([[0, 2], [1, 1]]), weight=np.array([0.5, 1.0, 2.0]), ignore_index=2,
     reduction="mean")
case("huber_loss", (), (), reduction="sum", delta=1.0)


def cases_for(name: str) -> list[Case]:
    """The cases of table op ``name``; raises when the op has none (so none slips in untested)."""
    if name not in CASES:
        raise LookupError(
            f"op {name!r} is in engine.ops.table but has no test case: add one to tests/engine/opcases.py"
        )
    return CASES[name]


def all_cases(table) -> list[Case]:
    """Every case of every op in ``table`` that has cases (in table order). Ops without one are
    reported by ``cases_for`` (the table tests call it per op), so collection never breaks."""
    return [c for name in table for c in CASES.get(name, ())]
