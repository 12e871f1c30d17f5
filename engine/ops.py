"""The derivative table: every primitive's forward, vjp and jvp, stated once.

Vocabulary (a rule asks for what it needs by parameter name):

- ``g``: the gradient flowing into the op's result (reverse mode);
- ``out``: the op's result;
- the forward's input names: ``x``, ``y``, ``cond``, ``xs`` (a list);
- ``dx``, ``dy``, ``dxs``: input tangents (forward mode);
- keyword-only names: the op's parameters (``dim``, ``keepdim``, ...).

Conventions that keep the rules short:

- A ``vjp`` tuple has one rule per input; ``None`` where no gradient flows.
- ``broadcast=True`` ops are elementwise with numpy broadcasting: rules ignore
  shapes and the machinery sums each gradient back to its input's shape.
- ``linear=True`` ops need no jvp: it is the op applied to the tangents.
- ``g`` and tangents may carry extra *leading* batch axes (vectorized
  Jacobians). Axis parameters are normalized to negative numbers before any
  rule runs, and a rule that builds a shape prefixes ``lead(g, out)``.
- Rules call table ops (``cos(x)``, ``reshape(g, shape=...)``) and operators,
  never numpy: on arrays that runs the forward directly, on Tensors (when
  ``create_graph=True``) it records, so every derivative is differentiable.
- A rule longer than a line is a named function right above its entry.

Each entry also declares its surface (see ``engine.op.Op``): the
``function``, ``method`` and ``inplace`` names that run it (``engine.sin``,
``x.sin()``, ``x.sin_()``), ``public=False`` for the internal ops clients may
not call, and an ``estimate`` of its result size where that can exceed its
inputs' (``expand``, ``matmul``...). Variants of ops without parameters are
generated; those that translate PyTorch's arguments (``dim``, ``keepdim``,
``alpha``...) are written by hand under the same name in ``engine.tensor``
(methods) and ``engine.functions`` (functions).
"""

from __future__ import annotations

import builtins
import itertools
import math
from functools import reduce as _fold

from engine import backend
from engine.op import Table, broadcast_numel, numel

table = Table()
define = table.define

_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ---- helpers shared by the rules ------------------------------------------


def lead(g, out) -> tuple:
    """The batch axes ``g`` carries in front of ``out`` (an array, a Tensor or a shape)."""
    ndim = len(out) if isinstance(out, tuple) else out.ndim
    return tuple(g.shape[: g.ndim - ndim])


def _check_dim(d: int, ndim: int) -> int:
    n = builtins.max(ndim, 1)
    if not -n <= d < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})")
    return d - n if d >= 0 else d


def axes(*names, extra=0, all_if_none=False):
    """A ``normalize`` hook making the named axis parameters negative.

    ``extra`` counts axes the op adds (``stack``, ``unsqueeze``);
    ``all_if_none`` turns ``dim=None`` into every axis, as reductions mean it.

    On a 0-d tensor PyTorch lets dim 0 and -1 name an axis of size 1 that the array does not
    have; an op along it leaves every element alone. Such a dim becomes ``()``, no axis at all:
    -1 would name the last batch axis of a cotangent or tangent carrying some (see ``lead``).
    Rules and forwards therefore take ``()`` as "along nothing" (a reduction over no axis).
    """

    def normalize(params, shape, *rest):
        ndim = len(shape) + extra
        fixed = dict(params)
        for name in names:
            value = params.get(name)
            if value is None:
                if all_if_none:
                    fixed[name] = tuple(range(-len(shape), 0))
                continue
            if isinstance(value, (tuple, list)):
                dims = tuple(sorted({_check_dim(int(d), ndim) for d in value}))
                if len(dims) != len(value):
                    raise RuntimeError(f"dim {tuple(value)} appears multiple times in the list of dims")
                fixed[name] = dims if ndim else ()
            else:
                dim = _check_dim(int(value), ndim)
                fixed[name] = dim if ndim else ()
        return fixed

    return normalize


def _as_tuple(dim) -> tuple:
    return dim if isinstance(dim, tuple) else (dim,)


def _kept_shape(shape, dim) -> tuple:
    """``shape`` with the reduced axes (negative ``dim``) set to 1, as keepdim leaves it."""
    dims = _as_tuple(dim)
    if len(dims) == len(shape):  # a full reduction, the usual loss
        return (1,) * len(shape)
    reduced = {d + len(shape) for d in dims}
    return tuple(1 if i in reduced else n for i, n in enumerate(shape))


def _count(shape, dim) -> int:
    return _fold(lambda a, d: a * shape[d], _as_tuple(dim), 1) if shape else 1


def unreduce(g, out, x_shape, dim):
    """Spread ``g`` (the gradient of a reduction over ``dim``) back over the input's shape."""
    batch = lead(g, out)
    return expand(reshape(g, shape=batch + _kept_shape(x_shape, dim)), shape=batch + tuple(x_shape))


def kept(out, x, dim):
    """The reduction result reshaped to broadcast against ``x``."""
    return reshape(out, shape=_kept_shape(x.shape, dim))


def reduction_rules(weights):
    """vjp and jvp of ``out = reduce(x, dim)`` from ``W = d out / d x`` (elementwise).

    ``weights(outk, x, **params)`` gets ``out`` with the reduced axes kept;
    then vjp = unreduce(g) * W and jvp = sum(dx * W over dim).
    """

    def vjp(g, out, x, *, dim, keepdim, **params):
        return unreduce(g, out, x.shape, dim) * weights(kept(out, x, dim), x, dim=dim, **params)

    def jvp(dx, out, x, *, dim, keepdim, **params):
        return sum(dx * weights(kept(out, x, dim), x, dim=dim, **params), dim=dim, keepdim=keepdim)

    return vjp, jvp


def _reduce_forward(fn):
    # The array method, not xp.<fn>: numpy's module functions add dispatch overhead.
    def forward(xp, x, *, dim=None, keepdim=False):
        return getattr(x, fn)(axis=dim, keepdims=keepdim)

    forward.__name__ = fn
    return forward


# ---- elementwise: unary ----------------------------------------------------


def unary(name, forward, vjp, jvp=None, **flags):
    """An elementwise op with PyTorch's four forms: ``engine.sin``, ``engine.sin_``, ``x.sin()``, ``x.sin_()``."""
    return define(name, forward, vjp, jvp, function=(name, name + "_"), method=name, inplace=name + "_", **flags)


neg = unary("neg", lambda xp, x: xp.negative(x), lambda g: -g, linear=True, doc="-x")
exp = unary("exp", lambda xp, x: xp.exp(x), lambda g, out: g * out, lambda dx, out: dx * out, doc="e^x")
log = unary("log", lambda xp, x: xp.log(x), lambda g, x: g / x, lambda dx, x: dx / x, doc="natural logarithm")
log1p = unary(
    "log1p", lambda xp, x: xp.log1p(x), lambda g, x: g / (x + 1), lambda dx, x: dx / (x + 1),
    grad_fn="Log1PBackward0", doc="log(1 + x)",
)
expm1 = unary("expm1", lambda xp, x: xp.expm1(x), lambda g, out: g * (out + 1), lambda dx, out: dx * (out + 1), doc="e^x - 1")
sqrt = unary("sqrt", lambda xp, x: xp.sqrt(x), lambda g, out: g / (out * 2), lambda dx, out: dx / (out * 2), doc="square root")
rsqrt = unary(
    "rsqrt",
    lambda xp, x: 1 / xp.sqrt(x),
    lambda g, out: g * out * out * out * -0.5,
    lambda dx, out: dx * out * out * out * -0.5,
    doc="1 / sqrt(x)",
)
reciprocal = unary(
    "reciprocal", lambda xp, x: 1 / x, lambda g, out: -g * out * out, lambda dx, out: -dx * out * out, doc="1 / x"
)
sin = unary("sin", lambda xp, x: xp.sin(x), lambda g, x: g * cos(x), lambda dx, x: dx * cos(x), doc="sine")
cos = unary("cos", lambda xp, x: xp.cos(x), lambda g, x: -g * sin(x), lambda dx, x: -dx * sin(x), doc="cosine")
tan = unary(
    "tan", lambda xp, x: xp.tan(x), lambda g, out: g * (out * out + 1), lambda dx, out: dx * (out * out + 1), doc="tangent"
)
tanh = unary(
    "tanh",
    lambda xp, x: xp.tanh(x),
    lambda g, out: tanh_backward(g, out),
    lambda dx, out: tanh_backward(dx, out),
    doc="hyperbolic tangent",
)
sigmoid = unary(
    "sigmoid",
    lambda xp, x: backend.expit(x),
    lambda g, out: sigmoid_backward(g, out),
    lambda dx, out: sigmoid_backward(dx, out),
    doc="1 / (1 + e^-x)",
)
# The subgradient at 0 is 0, as in PyTorch (threshold_backward uses out > 0).
relu = unary(
    "relu",
    lambda xp, x: xp.maximum(x, 0),
    lambda g, out: threshold_backward(g, out, threshold=0.0),
    lambda dx, out: threshold_backward(dx, out, threshold=0.0),
    doc="max(x, 0)",
)
abs = unary("abs", lambda xp, x: xp.abs(x), lambda g, x: g * sign(x), lambda dx, x: dx * sign(x), doc="|x|")
# sign is piecewise constant: its derivative is zero wherever it exists.
sign = unary("sign", lambda xp, x: xp.sign(x), lambda g: g * 0, lambda dx: dx * 0, doc="-1, 0 or 1")
erf = unary(
    "erf",
    lambda xp, x: backend.erf(x),
    lambda g, x: g * exp(-x * x) * (2 / math.sqrt(math.pi)),
    lambda dx, x: dx * exp(-x * x) * (2 / math.sqrt(math.pi)),
    doc="the error function",
)


def _gelu(xp, x, *, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1 + backend.erf(x / _SQRT_2))


gelu = define(
    "gelu",
    _gelu,
    lambda g, x, *, approximate: gelu_backward(g, x, approximate=approximate),
    lambda dx, x, *, approximate: gelu_backward(dx, x, approximate=approximate),
    doc="x * Phi(x) (approximate='tanh' for the tanh form)",
    function="gelu",
)


def _softplus(xp, x, *, beta=1.0, threshold=20.0):
    return xp.where(x * beta > threshold, x, xp.logaddexp(0, x * beta) / beta)


softplus = define(
    "softplus",
    _softplus,
    lambda g, x, **p: softplus_backward(g, x, **p),
    lambda dx, x, **p: softplus_backward(dx, x, **p),
    doc="log(1 + e^(beta x)) / beta, linear above threshold",
    function="softplus",
)


# ---- the activations' own backward ops ------------------------------------------
# PyTorch gives these activations derivative ops of their own (tanh_backward ...),
# and so do we: a second derivative then records TanhBackwardBackward0 as PyTorch
# prints it, and on the GPU each is one fused kernel (backend.fused) instead of a
# chain of three to ten. ``grad`` is the gradient the activation received; its
# result ``y`` or its input ``x`` is what the first derivative needs.


@backend.fused
def _tanh_backward(xp, grad, y):
    return grad * (1 - y * y)


tanh_backward = define(
    "tanh_backward",
    _tanh_backward,
    (lambda g, y: tanh_backward(g, y), lambda g, grad, y: g * grad * y * -2),
    lambda dgrad, dy, grad, y: tanh_backward(dgrad, y) - dy * grad * y * 2,
    broadcast=True,
    doc="grad * (1 - y^2): tanh's derivative given y = tanh(x)",
)


@backend.fused
def _sigmoid_backward(xp, grad, y):
    return grad * y * (1 - y)


sigmoid_backward = define(
    "sigmoid_backward",
    _sigmoid_backward,
    (lambda g, y: sigmoid_backward(g, y), lambda g, grad, y: g * grad * (1 - y * 2)),
    lambda dgrad, dy, grad, y: sigmoid_backward(dgrad, y) + dy * grad * (1 - y * 2),
    broadcast=True,
    doc="grad * y * (1 - y): sigmoid's derivative given y = sigmoid(x)",
)


@backend.fused
def _threshold_backward(xp, grad, y, *, threshold=0.0):
    return xp.where(y > threshold, grad, 0)


# Piecewise constant in y, so y's gradient is zero (as PyTorch's zeros_like(grad)).
threshold_backward = define(
    "threshold_backward",
    _threshold_backward,
    (lambda g, y, *, threshold: threshold_backward(g, y, threshold=threshold), lambda g: g * 0),
    lambda dgrad, y, *, threshold: threshold_backward(dgrad, y, threshold=threshold),
    broadcast=True,
    doc="grad where y > threshold, else 0 (relu's derivative; a NaN grad below the threshold gives 0)",
)


@backend.fused
def _gelu_backward(xp, grad, x, *, approximate="none"):
    if approximate == "tanh":
        inner = xp.tanh((x + x * x * x * 0.044715) * _SQRT_2_OVER_PI)
        slope = (1 + inner) * 0.5 + x * 0.5 * (1 - inner * inner) * (1 + x * x * 0.134145) * _SQRT_2_OVER_PI
    else:
        slope = (backend.special(xp).erf(x / _SQRT_2) + 1) * 0.5 + x * xp.exp(x * x * -0.5) * _INV_SQRT_2PI
    return grad * slope


def gelu_curvature(x, *, approximate):
    """d^2 gelu / dx^2: phi(x) (2 - x^2), or the second derivative of the tanh form."""
    if approximate == "tanh":
        inner = tanh((x + x * x * x * 0.044715) * _SQRT_2_OVER_PI)
        du = (1 + x * x * 0.134145) * _SQRT_2_OVER_PI
        return (1 - inner * inner) * (du - x * inner * du * du + x * x * (0.134145 * _SQRT_2_OVER_PI))
    return exp(x * x * -0.5) * (2 - x * x) * _INV_SQRT_2PI


gelu_backward = define(
    "gelu_backward",
    _gelu_backward,
    (
        lambda g, x, *, approximate: gelu_backward(g, x, approximate=approximate),
        lambda g, grad, x, *, approximate: g * grad * gelu_curvature(x, approximate=approximate),
    ),
    lambda dgrad, dx, grad, x, *, approximate: (
        gelu_backward(dgrad, x, approximate=approximate) + dx * grad * gelu_curvature(x, approximate=approximate)
    ),
    broadcast=True,
    doc="grad * gelu'(x)",
)


@backend.fused
def _softplus_backward(xp, grad, x, *, beta=1.0, threshold=20.0):
    z = x * beta
    return grad * xp.where(z > threshold, 1.0, backend.special(xp).expit(z))


def softplus_curvature(x, *, beta, threshold):
    s = sigmoid(x * beta)
    return where(x * beta > threshold, 0.0, s * (1 - s) * beta)


softplus_backward = define(
    "softplus_backward",
    _softplus_backward,
    (
        lambda g, x, **p: softplus_backward(g, x, **p),
        lambda g, grad, x, **p: g * grad * softplus_curvature(x, **p),
    ),
    lambda dgrad, dx, grad, x, **p: softplus_backward(dgrad, x, **p) + dx * grad * softplus_curvature(x, **p),
    broadcast=True,
    doc="grad * softplus'(x)",
)


def _clamp(xp, x, *, min=None, max=None):  # noqa: A002 - PyTorch's names
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    return xp.clip(x, min, max)


def clamp_pass(x, *, min, max):  # noqa: A002
    """1 where clamp passes x through (bounds inclusive, as PyTorch's subgradient), else 0."""
    inside = x == x
    if min is not None:
        inside = inside & (x >= min)
    if max is not None:
        inside = inside & (x <= max)
    return inside


clamp = define(
    "clamp",
    _clamp,
    lambda g, x, **p: g * clamp_pass(x, **p),
    lambda dx, x, **p: dx * clamp_pass(x, **p),
    grad_fn="ClampBackward1",
    doc="x limited to [min, max]",
    function=("clamp", "clip"), method=("clamp", "clip"), inplace=("clamp_", "clip_"),
)


def _pow_scalar_slope(x, exponent):
    return x * 0 if exponent == 0 else pow_scalar(x, exponent=exponent - 1) * exponent


pow_scalar = define(
    "pow_scalar",
    lambda xp, x, *, exponent: xp.power(x, exponent),
    lambda g, x, *, exponent: g * _pow_scalar_slope(x, exponent),
    lambda dx, x, *, exponent: dx * _pow_scalar_slope(x, exponent),
    grad_fn="PowBackward0",
    doc="x ** exponent for a number exponent",
    function="pow", method="pow", inplace="pow_",
)

# ---- elementwise: binary (broadcasting) ------------------------------------

add = define(
    "add", lambda xp, x, y: xp.add(x, y), (lambda g: g, lambda g: g), linear=True, broadcast=True, doc="x + y",
    function="add", method="add", inplace="add_",
)
sub = define(
    "sub", lambda xp, x, y: xp.subtract(x, y), (lambda g: g, lambda g: -g), linear=True, broadcast=True, doc="x - y",
    function=("sub", "subtract"), method=("sub", "subtract"), inplace="sub_",
)
# PyTorch runs ``2 - x`` as its own op (rsub with a Scalar other: RsubBackward1), not as a sub.
rsub = define(
    "rsub",
    lambda xp, x, *, other: other - x,
    lambda g: -g,
    lambda dx: -dx,
    grad_fn="RsubBackward1",
    doc="other - x for a number other (Python's 2 - x)",
    function=("sub", "subtract"),
)
mul = define(
    "mul",
    lambda xp, x, y: xp.multiply(x, y),
    (lambda g, y: g * y, lambda g, x: g * x),
    lambda dx, dy, x, y: dx * y + x * dy,
    broadcast=True,
    doc="x * y",
    function=("mul", "multiply"), method=("mul", "multiply"), inplace="mul_",
)
div = define(
    "div",
    lambda xp, x, y: xp.true_divide(x, y),
    # x and y saved, not the result (as PyTorch's DivBackward0): an in-place op on x / y, as a
    # custom Function's backward may do (grad += ...), leaves its gradient alone.
    (lambda g, y: g / y, lambda g, x, y: -g * x / (y * y)),
    lambda dx, dy, out, y: (dx - out * dy) / y,
    broadcast=True,
    doc="x / y",
    function=("div", "divide", "true_divide"), method=("div", "divide", "true_divide"), inplace="div_",
)


def _div_rounded(xp, x, y, *, rounding_mode):
    if rounding_mode == "floor":
        return xp.floor_divide(x, y)
    if rounding_mode == "trunc":
        quotient = xp.trunc(xp.true_divide(x, y))
        kind = xp.result_type(x, y)
        return quotient.astype(kind) if kind.kind in "iu" else quotient
    raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found '{rounding_mode}'")


# Piecewise constant: the gradient is zero (PyTorch's DivBackward2 gives zeros too).
div_rounded = define(
    "div_rounded",
    _div_rounded,
    (lambda g: g * 0, lambda g: g * 0),
    lambda dx, dy: dx * 0 + dy * 0,
    broadcast=True,
    grad_fn="DivBackward2",
    doc="x / y rounded down ('floor') or toward zero ('trunc')",
    function=("div", "divide", "true_divide"), method=("div", "divide", "true_divide"),
)


def safe_log(x):
    """log x, with log 0 taken as 0: d(x^y)/dy = x^y log x vanishes at x = 0 (PyTorch masks it too)."""
    return log(where(x == 0, 1.0, x))


pow = define(
    "pow",
    lambda xp, x, y: xp.power(x, y),
    (lambda g, x, y: g * y * pow(x, y - 1), lambda g, out, x: g * out * safe_log(x)),
    lambda dx, dy, out, x, y: dx * y * pow(x, y - 1) + dy * out * safe_log(x),
    broadcast=True,
    grad_fn="PowBackward1",
    doc="x ** y for tensors",
    function="pow", method="pow", inplace="pow_",
)


def rpow_slope(out, base):
    """d base^x / dx = base^x log(base). For base 0, PyTorch masks the x >= 0 side to 0 (out is
    0 or 1 there) and keeps -inf where out is inf (x < 0)."""
    if base == 0:
        return where(out == math.inf, -out, out * 0)
    return out * (math.log(base) if base > 0 else math.nan)


# ``2 ** x``: PyTorch's pow with a Scalar base (PowBackward2).
rpow = define(
    "rpow",
    lambda xp, x, *, base: xp.power(base, x),
    lambda g, out, *, base: g * rpow_slope(out, base),
    lambda dx, out, *, base: dx * rpow_slope(out, base),
    grad_fn="PowBackward2",
    doc="base ** x for a number base",
    function="pow",
)


def as_dtype_of(mask, x):
    """A boolean mask as 0/1 in x's dtype (bool * 0.5 would be float64 whatever x is)."""
    return to_dtype(mask, dtype=backend.dtype(x.dtype).name)


def share_of_larger(x, y):
    """1 where x wins, 1/2 on ties (PyTorch splits the gradient evenly), 0 where y wins."""
    ref = x if hasattr(x, "dtype") else y  # one of them may be a Python number
    return as_dtype_of(x > y, ref) + as_dtype_of(x == y, ref) * 0.5


maximum = define(
    "maximum",
    lambda xp, x, y: xp.maximum(x, y),
    (lambda g, x, y: g * share_of_larger(x, y), lambda g, x, y: g * share_of_larger(y, x)),
    lambda dx, dy, x, y: dx * share_of_larger(x, y) + dy * share_of_larger(y, x),
    broadcast=True,
    doc="elementwise max",
    function=("maximum", "max"), method=("maximum", "max"),
)
minimum = define(
    "minimum",
    lambda xp, x, y: xp.minimum(x, y),
    (lambda g, x, y: g * share_of_larger(y, x), lambda g, x, y: g * share_of_larger(x, y)),
    lambda dx, dy, x, y: dx * share_of_larger(y, x) + dy * share_of_larger(x, y),
    broadcast=True,
    doc="elementwise min",
    function=("minimum", "min"), method=("minimum", "min"),
)
where = define(
    "where",
    lambda xp, cond, x, y: xp.where(cond, x, y),
    (None, lambda g, cond: where(cond, g, 0.0), lambda g, cond: where(cond, 0.0, g)),
    lambda dx, dy, cond: where(cond, dx, dy),
    broadcast=True,
    doc="x where cond else y",
    function="where", method="where",
)

# ---- comparisons and logic (no gradient) -----------------------------------


def _nondiff(name, forward, doc, **variants):
    return define(name, forward, nondiff=True, broadcast=True, doc=doc, **variants)


eq = _nondiff("eq", lambda xp, x, y: xp.equal(x, y), "x == y", function="eq", method="eq")
ne = _nondiff("ne", lambda xp, x, y: xp.not_equal(x, y), "x != y", function="ne", method="ne")
lt = _nondiff("lt", lambda xp, x, y: xp.less(x, y), "x < y", function="lt", method="lt")
le = _nondiff("le", lambda xp, x, y: xp.less_equal(x, y), "x <= y", function="le", method="le")
gt = _nondiff("gt", lambda xp, x, y: xp.greater(x, y), "x > y", function="gt", method="gt")
ge = _nondiff("ge", lambda xp, x, y: xp.greater_equal(x, y), "x >= y", function="ge", method="ge")
logical_and = _nondiff("logical_and", lambda xp, x, y: xp.logical_and(x, y), "x and y")
logical_or = _nondiff("logical_or", lambda xp, x, y: xp.logical_or(x, y), "x or y")
logical_not = define("logical_not", lambda xp, x: xp.logical_not(x), nondiff=True, doc="not x", method="logical_not")
isnan = define("isnan", lambda xp, x: xp.isnan(x), nondiff=True, doc="x is NaN", function="isnan")
isfinite = define("isfinite", lambda xp, x: xp.isfinite(x), nondiff=True, doc="x is finite", function="isfinite")

# ---- linear algebra --------------------------------------------------------


def matmul_vjp_x(g, x, y):
    if y.ndim == 1:
        return g[..., None] * y
    if x.ndim == 1:
        return (g[..., None, :] @ y.mT)[..., 0, :]
    return matmul(g, y.mT)


def matmul_vjp_y(g, x, y):
    if y.ndim == 1:
        if x.ndim == 2:
            return g @ x  # x^T g for every row of a batched g: one matrix product
        return g[..., None] * x if x.ndim == 1 else (x.mT @ g[..., None])[..., 0]
    if x.ndim == 1:
        return x[:, None] * g[..., None, :]
    return matmul(x.mT, g)


def matmul_jvp(dx, dy, x, y):
    # A batched tangent of a 1-D operand is a stack of vectors, not a matrix: give it a column
    # (dy) or row (dx) axis. With a 2-D x, x dy for every row of dy is one product dy x^T.
    if y.ndim == 1:
        x_dy = dy @ x.mT if x.ndim == 2 else (x @ dy[..., None])[..., 0]
    else:
        x_dy = x @ dy
    dx_y = (dx[..., None, :] @ y)[..., 0, :] if x.ndim == 1 and y.ndim > 2 else dx @ y
    return dx_y + x_dy


def _matmul_name(params, shapes):
    ranks = tuple(len(s) for s in shapes)
    return {(1, 1): "DotBackward0", (2, 1): "MvBackward0"}.get(
        ranks, "BmmBackward0" if builtins.min(ranks) >= 3 else "MmBackward0"
    )


def _stacked_product(xp, x, y, k):
    """Stacks of matrices as vmap lays them out, in fewer and larger kernels than numpy's matmul (which
    runs one small product per matrix), or None where none applies. Each element is still one sum
    over k, in BLAS's order of a row."""
    if k == 1:
        # An outer product per matrix (vmap's per-sample weight gradients, 64x128x784 floats): BLAS
        # runs k=1 GEMMs and a broadcast multiply a strided loop; einsum writes each element once,
        # 2-3x faster than either, and its one product per element is matmul's value.
        return xp.einsum("...ik,...kj->...ij", x, y)
    shared_y = backend.repeated_along_leading(y, y.ndim - 2)
    if shared_y is not None and x.ndim > 2 and _broadcasts_to(y.shape[:-2], x.shape[:-2]):
        # One matrix for the whole stack (vmap's expanded weights): one GEMM over all of x's rows.
        rows = xp.matmul(x.reshape(-1, k), shared_y)
        return rows.reshape(tuple(x.shape[:-1]) + (shared_y.shape[-1],))
    shared_x = backend.repeated_along_leading(x, x.ndim - 2)
    if shared_x is not None and y.shape[-1] == 1 and y.ndim > 2 and _broadcasts_to(x.shape[:-2], y.shape[:-2]):
        # One matrix times a stack of columns (vmap's per-sample vectors, jacrev's cotangents):
        # the columns as the rows of one GEMM, A c = (c^T A^T)^T.
        rows = xp.matmul(y[..., 0].reshape(-1, k), shared_x.mT)
        return rows.reshape(tuple(y.shape[:-2]) + (shared_x.shape[-2], 1))
    return None


def _broadcasts_to(shape, target) -> bool:
    """Whether ``shape`` broadcasts to ``target`` itself (no axis of ``target`` grows)."""
    return len(shape) <= len(target) and builtins.all(n in (1, m) for n, m in zip(shape[::-1], target[::-1]))


def _check_matmul(xp, x, y):
    if not getattr(x, "ndim", 0) or not getattr(y, "ndim", 0):  # a number operand is 0-D too
        raise RuntimeError("both arguments to matmul need to be at least 1D, but they are "
                           f"{getattr(x, 'ndim', 0)}D and {getattr(y, 'ndim', 0)}D")
    k_x = x.shape[-1]
    k_y = y.shape[0] if y.ndim == 1 else y.shape[-2]
    if k_x != k_y:
        left = "x".join(map(str, x.shape[-2:])) if x.ndim > 1 else str(x.shape[0])
        right = "x".join(map(str, y.shape[-2:])) if y.ndim > 1 else str(y.shape[0])
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({left} and {right})")
    if x.ndim >= 2 and y.ndim >= 2 and (x.ndim > 2 or y.ndim > 2):
        product = _stacked_product(xp, x, y, k_x)
        if product is not None:
            return product
    return xp.matmul(x, y)


def matmul_size(shapes, params) -> int:
    if len(shapes) < 2 or not shapes[0] or not shapes[1]:
        return 0
    x, y = shapes[0], shapes[1]
    rows = x[-2] if len(x) >= 2 else 1
    cols = y[-1] if len(y) >= 2 else 1
    return broadcast_numel([x[:-2], y[:-2]]) * int(rows) * int(cols)


def matmul_batched(x, y, *, nbatch):
    """Under vmap: a per-sample vector becomes a one-row (one-column) matrix, so numpy's batch
    broadcasting pairs samples with samples, and the added axis goes again."""
    x_vector, y_vector = x.ndim - nbatch == 1, y.ndim - nbatch == 1
    x = unsqueeze(x, dim=-2) if x_vector else x
    y = unsqueeze(y, dim=-1) if y_vector else y
    rank = builtins.max(x.ndim, y.ndim) - nbatch  # per-sample batch axes line up behind the vmap's
    out = matmul(_pad_per_sample(x, nbatch, rank - (x.ndim - nbatch)),
                 _pad_per_sample(y, nbatch, rank - (y.ndim - nbatch)))
    if y_vector:
        out = squeeze(out, dim=-1)
    return squeeze(out, dim=-1 if y_vector else -2) if x_vector else out


matmul = define(
    "matmul",
    _check_matmul,
    (matmul_vjp_x, matmul_vjp_y),
    matmul_jvp,
    broadcast=True,  # batch axes broadcast; their gradients are summed back like any other
    grad_fn=_matmul_name,
    batch=matmul_batched,
    doc="matrix product (1-D, 2-D and batched, numpy semantics)",
    estimate=matmul_size,
    function=("matmul", "mm", "bmm"), method=("matmul", "mm", "bmm"),
)


def _dot(xp, x, y):
    x_ndim, y_ndim = getattr(x, "ndim", 0), getattr(y, "ndim", 0)  # a number operand is 0-D
    if x_ndim != 1 or y_ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {x_ndim}D and {y_ndim}D tensors")
    if x.shape != y.shape:
        raise RuntimeError(
            f"inconsistent tensor size, expected tensor [{x.shape[0]}] and src [{y.shape[0]}] "
            "to have the same number of elements, but got different numbers"
        )
    return xp.dot(x, y)


def dot_batched(x, y, *, nbatch):
    return sum(mul(x, y), dim=-1)


dot = define(
    "dot",
    _dot,
    (lambda g, y: g[..., None] * y, lambda g, x: g[..., None] * x),
    lambda dx, dy, x, y: (dx * y).sum(-1) + (x * dy).sum(-1),
    doc="inner product of two vectors",
    batch=dot_batched,
    function="dot", method="dot",
)


def _outer(xp, x, y):
    # Only 0-d operands are refused here: rules pass vectors with leading batch axes.
    for name, v in (("self", x), ("vec2", y)):
        if not hasattr(v, "ndim"):
            raise TypeError(f"outer(): argument '{name}' must be Tensor, not {type(v).__name__}")
        if v.ndim == 0:
            raise RuntimeError(f"outer: Expected 1-D argument {name}, but got 0-D")
    return x[..., :, None] * y[..., None, :]


def outer_batched(x, y, *, nbatch):
    return mul(unsqueeze(x, dim=-1), unsqueeze(y, dim=-2))


outer = define(
    "outer",
    _outer,
    (lambda g, y: (g * y).sum(-1), lambda g, x: (g * x[:, None]).sum(-2)),
    lambda dx, dy, x, y: outer(dx, y) + outer(x, dy),
    grad_fn="MulBackward0",  # PyTorch computes outer as a broadcast mul
    batch=outer_batched,
    doc="outer product of two vectors",
    estimate=lambda shapes, params: numel(shapes[0]) * (numel(shapes[1]) if len(shapes) > 1 else 1),
    function="outer", method="outer",
)


def _linear(xp, x, w, b):
    if not getattr(x, "ndim", 0) or not getattr(w, "ndim", 0):  # a number operand is 0-D too
        raise RuntimeError("both arguments to linear need to be at least 1D, but they are "
                           f"{getattr(x, 'ndim', 0)}D and {getattr(w, 'ndim', 0)}D")
    if x.ndim == 2 and 1 < x.shape[0] < w.shape[0] and x.shape[1] == w.shape[1]:
        # (w @ x.T).T is the same product; with fewer rows than outputs, numpy's OpenBLAS runs it
        # up to ~1.7x faster than x @ w.T (e.g. 16x1000 @ 1000x100: 54 µs against 90 µs).
        out = xp.matmul(w, x.mT).mT
    else:
        out = _check_matmul(xp, x, w.mT)
    return out if b is None else out + b


def linear_jvp(dx, dw, db, x, w):
    out = dx @ w.mT + x @ dw.mT
    return out if db is None else out + db


def linear_size(shapes, params) -> int:
    """``x @ w.T (+ b)``: x's leading axes times w's rows (none for a 1-D w), broadcast with b."""
    if len(shapes) < 2 or not shapes[0]:
        return 0
    x, w = shapes[0], shapes[1]
    product = (*x[:-1], *w[:-1])
    return broadcast_numel([product, *shapes[2:]])


def _pad_per_sample(t, nbatch, count):
    """``t`` with ``count`` size-1 axes between its ``nbatch`` batch axes and its per-sample axes."""
    if t is None or not count:
        return t
    return reshape(t, shape=tuple(t.shape[:nbatch]) + (1,) * count + tuple(t.shape[nbatch:]))


def _shared(t, nbatch):
    """Whether ``t`` (with ``nbatch`` batch axes) is the same for the whole batch (axes of size 1)."""
    return t is None or not hasattr(t, "shape") or builtins.all(n == 1 for n in t.shape[:nbatch])


def _lined_up(t, nbatch, rank):
    """A shared ``t`` without its batch axes (one operand for the whole batch); a batched one padded
    to ``rank`` per-sample axes."""
    if t is None or not hasattr(t, "shape"):
        return t
    if _shared(t, nbatch):
        return reshape(t, shape=tuple(t.shape[nbatch:]))
    return _pad_per_sample(t, nbatch, rank - (t.ndim - nbatch))


def linear_vjp_w(g, x):
    if x.ndim == 1:
        return g[..., None] * x[..., None, :]
    return matmul(g.mT, x)  # vmap's per-sample rows make it an outer product each (see _check_matmul)


def linear_batched(x, w, b, *, nbatch):
    """Under vmap: a shared weight stays one matrix (one product for the batch); a batched one is
    lined up with x's per-sample axes, and a per-sample vector x becomes a one-row matrix."""
    x_vector = x.ndim - nbatch == 1
    if x_vector:
        x = unsqueeze(x, dim=nbatch)
    rank = x.ndim - nbatch
    out = linear(x, _lined_up(w, nbatch, rank), _lined_up(b, nbatch, rank))
    return squeeze(out, dim=nbatch) if x_vector else out


linear = define(
    "linear",
    _linear,
    (
        lambda g, w: matmul(g, w),  # the table's matmul: one GEMM when w is vmap's broadcast weight
        linear_vjp_w,
        lambda g: g,
    ),
    linear_jvp,
    broadcast=True,
    grad_fn="AddmmBackward0",
    batch=linear_batched,
    doc="x @ w.T + b (the fully connected layer)",
    estimate=linear_size,
)

# ---- reductions ------------------------------------------------------------

sum = define(
    "sum",
    _reduce_forward("sum"),
    lambda g, out_shape, x_shape, *, dim, keepdim: unreduce(g, out_shape, x_shape, dim),
    linear=True,
    normalize=axes("dim", all_if_none=True),
    grad_fn=lambda params, shapes: "SumBackward0" if len(_as_tuple(params["dim"])) == len(shapes[0]) else "SumBackward1",
    doc="sum over dim (all axes by default)",
    function="sum", method="sum",
)
mean = define(
    "mean",
    _reduce_forward("mean"),
    # g is divided before it is spread: a broadcast view of the mean's gradient, not a full array
    lambda g, out_shape, x_shape, *, dim, keepdim: unreduce(g / _count(x_shape, dim), out_shape, x_shape, dim),
    linear=True,
    normalize=axes("dim", all_if_none=True),
    grad_fn=lambda params, shapes: "MeanBackward0" if len(_as_tuple(params["dim"])) == len(shapes[0]) else "MeanBackward1",
    doc="mean over dim (all axes by default)",
    function="mean", method="mean",
)


def prod_others(outk, x, *, dim):
    """d prod / d x_i = the product of the others, exact when x has zeros."""
    zeros = x == 0
    count = sum(zeros, dim=dim, keepdim=True)
    nonzero = where(zeros, 1.0, x)
    prod_nonzero = prod(nonzero, dim=dim, keepdim=True)
    return where(count == 0, prod_nonzero / nonzero, where(zeros & (count == 1), prod_nonzero, 0.0))


prod = define(
    "prod",
    _reduce_forward("prod"),
    *reduction_rules(prod_others),
    normalize=axes("dim", all_if_none=True),
    doc="product over dim (all axes by default)",
    function="prod", method="prod",
)


def _moments(xp, x, *, dim=None, correction=1.0, keepdim=False):
    centered = x - xp.mean(x, axis=dim, keepdims=True)
    n = _count(x.shape, dim) - correction
    return xp.sum(centered * centered, axis=dim, keepdims=keepdim) / builtins.max(n, 0)


def var_slope(outk, x, *, dim, correction):
    """2 (x - mean) / (N - correction). With no degrees of freedom left (one element, Bessel's
    correction) the variance is 0/0 = nan, and its slope 2/0 * 0 = nan too, as PyTorch's."""
    dof = builtins.max(_count(x.shape, dim) - correction, 0)
    return (x - mean(x, dim=dim, keepdim=True)) * (2 / dof if dof else math.inf)


def std_slope(outk, x, *, dim, correction):
    """var' / (2 std); 0 where the std is 0 (PyTorch's subgradient: all elements equal)."""
    safe = where(outk == 0, 1.0, outk)
    return where(outk == 0, 0.0, var_slope(outk, x, dim=dim, correction=correction) / (safe * 2))


var = define(
    "var",
    _moments,
    *reduction_rules(var_slope),
    normalize=axes("dim", all_if_none=True),
    doc="variance over dim, with Bessel's correction by default",
    function="var", method="var",
)
std = define(
    "std",
    lambda xp, x, *, dim=None, correction=1.0, keepdim=False: xp.sqrt(
        _moments(xp, x, dim=dim, correction=correction, keepdim=keepdim)
    ),
    *reduction_rules(std_slope),
    normalize=axes("dim", all_if_none=True),
    doc="standard deviation over dim",
    function="std", method="std",
)


def extreme_share(outk, x, *, dim):
    """Ties share the gradient evenly, as PyTorch's amax/amin do."""
    hits = as_dtype_of(x == outk, x)
    return hits / sum(hits, dim=dim, keepdim=True)


amax = define("amax", _reduce_forward("max"), *reduction_rules(extreme_share),
              normalize=axes("dim", all_if_none=True), doc="maximum over dim", function="amax", method="amax")
amin = define("amin", _reduce_forward("min"), *reduction_rules(extreme_share),
              normalize=axes("dim", all_if_none=True), doc="minimum over dim", function="amin", method="amin")
max = define("max", _reduce_forward("max"), *reduction_rules(extreme_share),
             normalize=axes("dim", all_if_none=True), grad_fn="MaxBackward1",
             doc="maximum of all elements", function="max", method="max")
min = define("min", _reduce_forward("min"), *reduction_rules(extreme_share),
             normalize=axes("dim", all_if_none=True), grad_fn="MinBackward1",
             doc="minimum of all elements", function="min", method="min")


def _arg_along(xp, fn, x, dim, keepdim):
    """``xp.argmax`` (or argmin) along ``dim``; along no axis (a 0-d tensor's dim) each element
    is the extreme of its own one-element slice, at index 0."""
    if dim == ():
        return xp.zeros(x.shape, dtype=xp.int64)
    return getattr(xp, fn)(x, axis=dim, keepdims=keepdim)


def _first_extreme_mask(xp, x, *, dim, largest=True):
    if dim == ():
        return xp.ones(x.shape, dtype=x.dtype)
    index = (xp.argmax if largest else xp.argmin)(x, axis=dim, keepdims=True)
    mask = xp.zeros(x.shape, dtype=x.dtype)
    xp.put_along_axis(mask, index, 1, axis=dim)
    return mask


first_extreme_mask = define(
    "first_extreme_mask", _first_extreme_mask, nondiff=True, normalize=axes("dim"),
    doc="1 at the first max (or min) along dim, else 0",
    public=False,
)


def _extreme_dim(fn, arg):
    def forward(xp, x, *, dim, keepdim=False):
        values = getattr(xp, fn)(x, axis=dim, keepdims=keepdim)
        return values, _arg_along(xp, arg, x, dim, keepdim)

    return forward


max_dim = define(
    "max_dim",
    _extreme_dim("max", "argmax"),
    *reduction_rules(lambda outk, x, *, dim: first_extreme_mask(x, dim=dim, largest=True)),
    normalize=axes("dim"),
    extra_outputs=1,
    grad_fn="MaxBackward0",
    doc="(values, indices) of the maximum along dim; the gradient goes to the index",
    function="max", method="max",
)
min_dim = define(
    "min_dim",
    _extreme_dim("min", "argmin"),
    *reduction_rules(lambda outk, x, *, dim: first_extreme_mask(x, dim=dim, largest=False)),
    normalize=axes("dim"),
    extra_outputs=1,
    grad_fn="MinBackward0",
    doc="(values, indices) of the minimum along dim",
    function="min", method="min",
)


def _arg_extreme(fn):
    def forward(xp, x, *, dim=None, keepdim=False):
        if dim is None:
            return getattr(xp, fn)(x.reshape(-1))
        return _arg_along(xp, fn, x, dim, keepdim)

    return forward


def _arg_extreme_batched(op):
    """Under vmap, ``dim=None`` flattens each sample, not the batch."""

    def rule(x, *, nbatch, dim, keepdim):
        if dim is not None:
            return op(x, dim=dim, keepdim=keepdim)
        per_sample = tuple(x.shape[nbatch:])
        flat = op(reshape(x, shape=tuple(x.shape[:nbatch]) + (-1,)), dim=-1, keepdim=False)
        return reshape(flat, shape=tuple(flat.shape) + (1,) * len(per_sample)) if keepdim else flat

    return rule


argmax = define("argmax", _arg_extreme("argmax"), nondiff=True, normalize=axes("dim"), doc="index of the maximum",
                function="argmax", method="argmax", batch=_arg_extreme_batched(lambda x, **p: argmax(x, **p)))
argmin = define("argmin", _arg_extreme("argmin"), nondiff=True, normalize=axes("dim"), doc="index of the minimum",
                function="argmin", method="argmin", batch=_arg_extreme_batched(lambda x, **p: argmin(x, **p)))
all = define("all", _reduce_forward("all"), nondiff=True, normalize=axes("dim", all_if_none=True), doc="all true",
             method="all")
any = define("any", _reduce_forward("any"), nondiff=True, normalize=axes("dim", all_if_none=True), doc="any true",
             method="any")


def _norm(xp, x, *, p=2.0, dim=None, keepdim=False):
    a = xp.abs(x)
    if p == math.inf:
        return xp.max(a, axis=dim, keepdims=keepdim)
    if p == 1:
        return xp.sum(a, axis=dim, keepdims=keepdim)
    if p == 2:
        return xp.sqrt(xp.sum(x * x, axis=dim, keepdims=keepdim))
    return xp.sum(a**p, axis=dim, keepdims=keepdim) ** (1 / p)


def norm_slope(outk, x, *, dim, p):
    """d ||x||_p / dx; 0 where the norm is 0 (PyTorch's subgradient)."""
    if p == math.inf:
        return extreme_share(outk, abs(x), dim=dim) * sign(x)
    if p == 1:
        return sign(x)
    safe = where(outk == 0, 1.0, outk)
    if p == 2:
        return where(outk == 0, 0.0, x / safe)
    return where(outk == 0, 0.0, sign(x) * pow_scalar(abs(x) / safe, exponent=p - 1))


norm = define(
    "norm",
    _norm,
    *reduction_rules(norm_slope),
    normalize=axes("dim", all_if_none=True),
    grad_fn="LinalgVectorNormBackward0",
    doc="vector p-norm over dim (p = 1, 2, inf or any p > 0)",
    function="norm", method="norm",
)


def _logsumexp(xp, x, *, dim, keepdim=False):
    peak = xp.max(x, axis=dim, keepdims=True)
    peak = xp.where(xp.isfinite(peak), peak, 0)
    total = xp.log(xp.sum(xp.exp(x - peak), axis=dim, keepdims=True)) + peak
    return total if keepdim else xp.squeeze(total, axis=dim)


logsumexp = define(
    "logsumexp",
    _logsumexp,
    *reduction_rules(lambda outk, x, *, dim: exp(x - outk)),
    normalize=axes("dim"),
    doc="log(sum(exp(x))) over dim, computed stably",
    function="logsumexp", method="logsumexp",
)


def _softmax(xp, x, *, dim):
    shifted = xp.exp(x - xp.max(x, axis=dim, keepdims=True))
    return shifted / xp.sum(shifted, axis=dim, keepdims=True)


softmax = define(
    "softmax",
    _softmax,
    lambda g, out, *, dim: out * (g - sum(g * out, dim=dim, keepdim=True)),
    lambda dx, out, *, dim: out * (dx - sum(dx * out, dim=dim, keepdim=True)),
    normalize=axes("dim"),
    doc="exp(x) / sum(exp(x)) along dim",
    function="softmax", method="softmax",
)
log_softmax = define(
    "log_softmax",
    lambda xp, x, *, dim: x - _logsumexp(xp, x, dim=dim, keepdim=True),
    lambda g, out, *, dim: g - exp(out) * sum(g, dim=dim, keepdim=True),
    lambda dx, out, *, dim: dx - sum(exp(out) * dx, dim=dim, keepdim=True),
    normalize=axes("dim"),
    doc="x - logsumexp(x) along dim",
    function="log_softmax", method="log_softmax",
)
flip = define(
    "flip",
    # A copy, as PyTorch's flip: numpy's is a view, whose in-place writes would reach x unrecorded.
    lambda xp, x, *, dims: xp.array(xp.flip(x, axis=dims)),  # (xp.array copies; a 0-d flip is a scalar)
    lambda g, *, dims: flip(g, dims=dims),
    linear=True,
    normalize=axes("dims"),
    doc="reverse the order along dims",
    function="flip", method="flip",
)


def _cumsum(xp, x, *, dim):
    # Along no axis (a 0-d tensor's dim) the running sum is x itself: numpy's cumsum would
    # flatten a 0-d array to shape (1,).
    return x.copy() if dim == () else xp.cumsum(x, axis=dim)


cumsum = define(
    "cumsum",
    _cumsum,
    lambda g, *, dim: flip(cumsum(flip(g, dims=_as_tuple(dim)), dim=dim), dims=_as_tuple(dim)),
    linear=True,
    normalize=axes("dim"),
    doc="running sum along dim",
    function="cumsum", method="cumsum",
)

# ---- shape and indexing ----------------------------------------------------


def _resolve_shape(params, shape):
    target = list(params["shape"])
    size = _fold(lambda a, n: a * n, shape, 1)
    if target.count(-1) > 1:
        raise RuntimeError("only one dimension can be inferred")
    if -1 in target:
        known = _fold(lambda a, n: a * n, (n for n in target if n != -1), 1)
        if known == 0 or size % known:
            raise RuntimeError(f"shape '{list(params['shape'])}' is invalid for input of size {size}")
        target[target.index(-1)] = size // known
    if _fold(lambda a, n: a * n, target, 1) != size:
        raise RuntimeError(f"shape '{list(params['shape'])}' is invalid for input of size {size}")
    return {"shape": tuple(target)}


def _reshape(xp, x, *, shape):
    return x.reshape(shape)


def _reshape_vjp(g, out_shape, x_shape):
    return reshape(g, shape=lead(g, out_shape) + tuple(x_shape))


def _reshape_jvp(dx, out, x):
    return reshape(dx, shape=lead(dx, x) + tuple(out.shape))


def reshape_batched(x, *, nbatch, shape):
    return reshape(x, shape=tuple(x.shape[:nbatch]) + tuple(shape))


def unsafe_view_batched(x, *, nbatch, shape):
    return unsafe_view(x, shape=tuple(x.shape[:nbatch]) + tuple(shape))


reshape = define(
    "reshape",
    _reshape,
    _reshape_vjp,
    _reshape_jvp,
    view=True,
    normalize=_resolve_shape,
    grad_fn="ViewBackward0",
    batch=reshape_batched,
    doc="the same elements in a new shape",
    function="reshape", method=("reshape", "view"),
)
# PyTorch's _unsafe_view: a reshape whose result is not tracked as a view (matmul reshapes its
# fresh mm/bmm result with it, so the output's grad_fn is UnsafeViewBackward0).
unsafe_view = define(
    "unsafe_view",
    _reshape,
    _reshape_vjp,
    _reshape_jvp,
    normalize=_resolve_shape,
    batch=unsafe_view_batched,
    doc="reshape, the result not a view (matmul's batched output)",
    method="reshape",
)


def _check_expand(params, shape):
    target = tuple(params["shape"])
    if len(target) < len(shape):
        raise RuntimeError(
            f"expand: the number of sizes provided ({len(target)}) must be greater or equal to the "
            f"number of dimensions in the tensor ({len(shape)})"
        )
    for have, want in zip(shape[::-1], target[::-1]):
        if have != want and have != 1:
            raise RuntimeError(
                f"The expanded size of the tensor ({want}) must match the existing size ({have}) at "
                f"non-singleton dimension. Target sizes: {list(target)}. Tensor sizes: {list(shape)}"
            )
    return {"shape": target}


def expand_jvp(dx, out, x):
    batch = lead(dx, x)
    padded = (1,) * (out.ndim - x.ndim) + tuple(x.shape)
    return expand(reshape(dx, shape=batch + padded), shape=batch + tuple(out.shape))


def expand_batched(x, *, nbatch, shape):
    x = _pad_per_sample(x, nbatch, len(shape) - (x.ndim - nbatch))
    return expand(x, shape=tuple(x.shape[:nbatch]) + tuple(shape))


expand = define(
    "expand",
    lambda xp, x, *, shape: backend.broadcast_to(x, shape),
    lambda g, out_shape, x_shape: sum_to_size(g, shape=tuple(x_shape), lead=len(lead(g, out_shape))),
    expand_jvp,
    view=True,
    normalize=_check_expand,
    batch=expand_batched,
    doc="broadcast to a larger shape without copying",
    method="expand",
    estimate=lambda shapes, params: numel(params.get("shape", ())),
)


def sum_to_size_vjp(g, out_shape, x_shape, *, shape, lead):
    batch = g.shape[: g.ndim - len(out_shape)]
    kept = tuple(x_shape[:lead]) + (1,) * (len(x_shape) - lead - len(shape)) + tuple(shape)
    return expand(reshape(g, shape=tuple(batch) + kept), shape=tuple(batch) + tuple(x_shape))


def _check_sum_to_size(params, shape):
    target, own = tuple(params["shape"]), tuple(shape[params["lead"] :])
    if len(target) > len(own) or builtins.any(n != 1 and n != m for n, m in zip(target[::-1], own[::-1])):
        raise RuntimeError(f"size {{{list(target)}}} is not expandable to size {{{list(own)}}}.")
    return params


sum_to_size = define(
    "sum_to_size",
    lambda xp, x, *, shape, lead=0: backend.sum_to_shape(x, tuple(shape), lead),
    sum_to_size_vjp,
    lambda dx, x, *, shape, lead: sum_to_size(dx, shape=shape, lead=lead + dx.ndim - x.ndim),
    normalize=_check_sum_to_size,
    batch=lambda x, *, nbatch, shape, lead: sum_to_size(x, shape=shape, lead=lead + nbatch),
    doc="sum broadcast axes away (the adjoint of expand)",
    public=False,
)


def _permute_forward(xp, x, *, dims):
    front = x.ndim - len(dims)
    return x.transpose(tuple(range(front)) + tuple(x.ndim + d for d in dims))


def _inverse_permutation(dims):
    n = len(dims)
    inverse = [0] * n
    for i, d in enumerate(dims):
        inverse[d + n] = i - n
    return tuple(inverse)


def _check_permute(params, shape):
    given = tuple(int(d) for d in params["dims"])
    # Normalized (negative) dims may leave leading axes alone: the batch axes a rule's
    # cotangent carries (``permute(g, dims=...)`` under create_graph).
    ndim = len(given) if len(given) < len(shape) and builtins.all(d < 0 for d in given) else len(shape)
    dims = tuple(_check_dim(d, ndim) for d in given)
    if len(dims) != ndim or len(set(dims)) != len(dims):
        raise RuntimeError(
            f"permute(): dims {tuple(params['dims'])} must name each of the tensor's {len(shape)} "
            "dimensions exactly once"
        )
    return {"dims": dims}


permute = define(
    "permute",
    _permute_forward,
    lambda g, *, dims: permute(g, dims=_inverse_permutation(dims)),
    linear=True,
    view=True,
    normalize=_check_permute,
    doc="reorder axes",
    function="permute", method="permute",
)
transpose = define(
    "transpose",
    lambda xp, x, *, dim0, dim1: x[...] if dim0 == () else x.swapaxes(dim0, dim1),  # () on a 0-d tensor
    lambda g, *, dim0, dim1: transpose(g, dim0=dim0, dim1=dim1),
    linear=True,
    view=True,
    normalize=axes("dim0", "dim1"),
    doc="swap two axes",
    function="transpose", method=("transpose", "swapaxes"),
)


def _t(xp, x):
    if x.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {x.ndim}D")
    return x.swapaxes(0, 1) if x.ndim == 2 else x[...]


# ``M.t()`` is its own op in PyTorch (TBackward0): the transpose of a matrix, a view of the same
# tensor for fewer dimensions. Rules swap the last two axes, leaving batch axes alone.
t = define(
    "t",
    _t,
    lambda g, x_shape: transpose(g, dim0=-2, dim1=-1) if len(x_shape) == 2 else g,
    lambda dx, x: transpose(dx, dim0=-2, dim1=-1) if x.ndim == 2 else dx,
    view=True,
    batch=lambda x, *, nbatch: transpose(x, dim0=-2, dim1=-1) if x.ndim - nbatch == 2 else reshape(x, shape=x.shape),
    doc="the transpose of a matrix (a 1-D or 0-D tensor as it is)",
    function="t", method="t",
)


def _squeeze_dims(params, shape):
    """The (negative) axes of size 1 to drop, as a tuple; one given axis stays an int (PyTorch's
    squeeze.dim overload, SqueezeBackward1), squeezed only where it has size 1."""
    dim = params.get("dim")
    if isinstance(dim, int) and shape:
        return axes("dim")({"dim": dim}, shape)
    if dim is None:
        candidates = tuple(range(-len(shape), 0))
    else:
        candidates = axes("dim")({"dim": dim}, shape)["dim"]
        candidates = candidates if isinstance(candidates, tuple) else (candidates,)
    return {"dim": tuple(d for d in candidates if shape and shape[d] == 1)}


def _squeeze(xp, x, *, dim):
    if isinstance(dim, int):
        return x.squeeze(axis=dim) if x.shape[dim] == 1 else x
    return x.squeeze(axis=dim) if dim else x


squeeze = define(
    "squeeze",
    _squeeze,
    lambda g, out_shape, x_shape: reshape(g, shape=lead(g, out_shape) + tuple(x_shape)),
    linear=True,
    view=True,
    normalize=_squeeze_dims,
    grad_fn=lambda params, shapes: "SqueezeBackward1" if isinstance(params["dim"], int) else "SqueezeBackward0",
    doc="drop axes of size 1",
    function="squeeze", method="squeeze",
)
unsqueeze = define(
    "unsqueeze",
    lambda xp, x, *, dim: xp.expand_dims(x, dim),
    lambda g, out_shape, x_shape: reshape(g, shape=lead(g, out_shape) + tuple(x_shape)),
    linear=True,
    view=True,
    normalize=axes("dim", extra=1),
    doc="insert an axis of size 1",
    function="unsqueeze", method="unsqueeze",
)


def _tile_forward(xp, x, *, reps):
    return xp.tile(x, reps)


def tile_vjp(g, out_shape, x_shape, *, reps):
    batch = lead(g, out_shape)
    shape = (1,) * (len(reps) - len(x_shape)) + tuple(x_shape)
    pairs = tuple(n for r, s in zip(reps, shape) for n in (r, s))
    repeated_axes = tuple(len(batch) + 2 * i for i in range(len(reps)))
    total = sum(reshape(g, shape=batch + pairs), dim=repeated_axes)
    return reshape(total, shape=batch + tuple(x_shape))


def tile_jvp(dx, x, *, reps):
    batch = lead(dx, x)
    padded = (1,) * (len(reps) - x.ndim) + tuple(x.shape)
    return tile(reshape(dx, shape=batch + padded), reps=(1,) * len(batch) + tuple(reps))


def _check_reps(params, shape):
    reps = tuple(int(r) for r in params["reps"])
    if len(reps) < len(shape):
        raise RuntimeError(
            "Number of dimensions of repeat dims can not be smaller than number of dimensions of tensor"
        )
    return {"reps": reps}


def tile_size(shapes, params) -> int:
    reps = tuple(params.get("reps", ()))
    return numel((1,) * (len(reps) - len(shapes[0])) + tuple(shapes[0])) * numel(reps)


def tile_batched(x, *, nbatch, reps):
    x = _pad_per_sample(x, nbatch, len(reps) - (x.ndim - nbatch))
    return tile(x, reps=(1,) * nbatch + tuple(reps))


tile = define(
    "tile", _tile_forward, tile_vjp, tile_jvp, normalize=_check_reps, grad_fn="RepeatBackward0",
    batch=tile_batched,
    doc="repeat the tensor along each axis (PyTorch's Tensor.repeat)",
    method="repeat",
    estimate=tile_size,
)


def _full_index(params, shape, *rest):
    """Make an index explicit: ``(Ellipsis, one entry per axis...)``, None adding an axis and
    bool masks turned into integer arrays. The leading Ellipsis absorbs any batch axes a
    cotangent or tangent carries, so the same index serves vectorized rules."""
    parts = []
    for part in params["index"]:
        if backend.is_array(part) and part.dtype == bool:
            parts.extend(part.nonzero())
        elif isinstance(part, bool):
            raise IndexError("indexing with a Python bool is not supported; use a tensor mask")
        elif hasattr(part, "__index__") and not backend.is_array(part):
            parts.append(int(part))
        elif backend.is_array(part) and part.ndim == 0 and part.dtype.kind in "iu":
            # A 0-d integer tensor indexes like the int it holds (PyTorch's select: a view, whose
            # in-place writes reach x), not like numpy's integer-array indexing (a copy).
            parts.append(int(part))
        else:
            parts.append(part)
    consumed = builtins.sum(1 for p in parts if p is not None and p is not Ellipsis)
    if consumed > len(shape):
        raise IndexError(f"too many indices for tensor of dimension {len(shape)}")
    # Identity tests: `==` on an integer-array part would compare elementwise.
    ellipses = [i for i, p in enumerate(parts) if p is Ellipsis]
    if len(ellipses) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    fill = [slice(None)] * (len(shape) - consumed)
    if ellipses:
        at = ellipses[0]
        parts[at : at + 1] = fill
    else:
        parts.extend(fill)
    axis = 0
    for part in parts:
        if part is None:
            continue
        size = shape[axis]
        if isinstance(part, int) and not -size <= part < size:
            raise IndexError(f"index {part} is out of bounds for dimension {axis} with size {size}")
        # One read of a device index (not two, min and max): cupy's indexing would wrap silently.
        if backend.is_array(part) and part.size and bool(((part < -size) | (part >= size)).any()):
            raise IndexError(f"index out of range in self (dimension {axis} has size {size})")
        axis += 1
    return {**params, "index": (Ellipsis, *parts)}


def _index_kind(params, shapes):
    """PyTorch applies an index part by part, so its grad_fn is the last part that does
    something: ``x[0, 1:]`` is SliceBackward0, ``x[1:, 0]`` SelectBackward0, ``x[0, None]``
    UnsqueezeBackward0; ``x[:, :]``, where no part does anything, AliasBackward0. (A bare ``x[:]``,
    which PyTorch runs as a slice, arrives here as ``x[0:]``: see ``Tensor.__getitem__``.)"""
    index = params["index"][1:]
    if builtins.any(backend.is_array(p) for p in index):
        return "IndexBackward0"
    kind = "AliasBackward0"
    for p in index:
        if p is None:
            kind = "UnsqueezeBackward0"
        elif isinstance(p, int):
            kind = "SelectBackward0"
        elif p != slice(None):
            kind = "SliceBackward0"
    return kind


def _has_arrays(index) -> bool:
    return builtins.any(backend.is_array(p) for p in index)


def _getitem(xp, x, *, index):
    return x[index]


def getitem_size(shapes, params) -> int:
    """Basic indexing keeps or shrinks axes; integer arrays contribute their broadcast shape."""
    shape = shapes[0]
    basic = 1
    arrays = []
    axis = 0
    for part in params.get("index", ())[1:]:  # the normalized index starts with Ellipsis
        if part is None:
            continue
        if isinstance(part, slice):
            basic *= len(range(*part.indices(int(shape[axis]))))
        elif hasattr(part, "shape"):
            arrays.append(tuple(part.shape))
        axis += 1
    return basic * (broadcast_numel(arrays) if arrays else 1)


getitem = define(
    "getitem",
    _getitem,
    lambda g, out_shape, x_shape, *, index: getitem_adjoint(g, shape=lead(g, out_shape) + tuple(x_shape), index=index),
    linear=True,
    view=True,
    normalize=_full_index,
    grad_fn=_index_kind,
    doc="x[index]: ints, slices, None, Ellipsis, integer and boolean arrays",
    estimate=getitem_size,
)


def _getitem_adjoint(xp, y, *, shape, index):
    full = xp.zeros(shape, dtype=y.dtype)
    if _has_arrays(index):
        xp.add.at(full, index, y)  # repeated indices accumulate
    else:
        full[index] = y
    return full


getitem_adjoint = define(
    "getitem_adjoint",
    _getitem_adjoint,
    lambda g, *, index, shape: getitem(g, index=index),
    lambda dy, y, *, shape, index: getitem_adjoint(dy, shape=lead(dy, y) + tuple(shape), index=index),
    grad_fn="IndexPutBackward0",
    batch="loop",  # its params name whole-tensor positions or shapes
    doc="zeros of shape with y added at index (the adjoint of getitem)",
    public=False,
    estimate=lambda shapes, params: numel(params.get("shape", ())),
)


def _index_put(xp, x, values, *, index):
    out = xp.array(x, copy=True)
    try:
        out[index] = values
    except ValueError as error:  # numpy's word for it; PyTorch raises a RuntimeError
        raise RuntimeError(
            f"shape mismatch: value tensor of shape {list(values.shape)} cannot be broadcast to indexing "
            f"result of shape {list(out[index].shape)}"
        ) from error
    return out


def index_put_values_vjp(g, out_shape, values_shape, *, index):
    """The gradient of values: g at index. ``x[index] = values`` may drop leading size-1 axes of
    values (``y[1] = v`` with v of shape (1,)); restore them, the machinery sums the rest."""
    picked = getitem(g, index=index)
    batch = lead(g, out_shape)
    extra = len(values_shape) - (picked.ndim - len(batch))
    if extra > 0:
        picked = reshape(picked, shape=batch + (1,) * extra + tuple(picked.shape[len(batch) :]))
    return picked


index_put = define(
    "index_put",
    _index_put,
    (lambda g, *, index: index_put(g, 0.0, index=index), index_put_values_vjp),
    lambda dx, dvalues, *, index: index_put(dx, dvalues, index=index),
    broadcast=True,
    normalize=_full_index,
    grad_fn="IndexPutBackward0",
    batch="loop",  # its params name whole-tensor positions or shapes
    doc="x with values written at index (x[index] = values, out of place)",
)

# ---- writing through views (PyTorch's CopySlices) --------------------------
# A view of a base, however it was made (indexing, reshape, transpose, views of views), picks
# the base's elements at fixed flat (row-major) positions. In-place ops on a view become these
# two ops on its base: ``copy_slices`` writes the view's new values into the base and
# ``take_flat`` reads the view back out of it. ``shape`` is the base's; arguments may carry
# leading batch axes in front of it.


def _flat(x, shape):
    return x.reshape(x.shape[: x.ndim - len(shape)] + (-1,))


def _take_flat(xp, x, *, positions, shape):
    return _flat(x, shape)[..., positions]


def take_flat_vjp(g, out_shape, *, positions, shape):
    batch = lead(g, out_shape)
    size = _fold(lambda a, n: a * n, shape, 1)
    flat = getitem_adjoint(g, shape=batch + (size,), index=(Ellipsis, positions))
    return reshape(flat, shape=batch + tuple(shape))


def take_flat_size(shapes, params) -> int:
    positions = params.get("positions", ())
    return int(positions.size if backend.is_array(positions) else backend.numpy.asarray(positions).size)


take_flat = define(
    "take_flat",
    _take_flat,
    take_flat_vjp,
    linear=True,
    grad_fn="AsStridedBackward0",
    batch="loop",  # its params name whole-tensor positions or shapes
    doc="x's elements at flat row-major positions (a view read again from its base, as_strided)",
    public=False,
    estimate=take_flat_size,
)


def _copy_slices(xp, x, values, *, positions, shape):
    out = xp.array(x, copy=True, order="C")  # C order: the flat reshape below is a view of it
    _flat(out, shape)[..., positions] = values
    return out


copy_slices = define(
    "copy_slices",
    _copy_slices,
    (
        lambda g, *, positions, shape: copy_slices(g, 0.0, positions=positions, shape=shape),
        lambda g, *, positions, shape: take_flat(g, positions=positions, shape=shape),
    ),
    linear=True,
    grad_fn="CopySlices",
    doc="x with values written at flat row-major positions (an in-place op on a view of x)",
    public=False,
)


def cat_vjp(g, xs_shape, *, dim):
    pieces, start = [], 0
    tail = (slice(None),) * (-dim - 1)
    for shape in xs_shape:
        size = shape[dim]
        pieces.append(getitem(g, index=(Ellipsis, slice(start, start + size), *tail)))
        start += size
    return pieces


def _cat(xp, xs, *, dim=0):
    shapes = [x.shape for x in xs]
    for i, s in enumerate(shapes[1:], 1):
        if len(s) != len(shapes[0]) or builtins.any(
            a != b for k, (a, b) in enumerate(zip(s, shapes[0])) if k != dim + len(s)
        ):
            raise RuntimeError(
                f"Sizes of tensors must match except in dimension {dim + len(s)}. "
                f"Expected size {list(shapes[0])} but got size {list(s)} for tensor number {i} in the list."
            )
    return xp.concatenate(xs, axis=dim)


def _variadic_axes(extra):
    base = axes("dim", extra=extra)

    def normalize(params, shapes):
        if not shapes:
            raise RuntimeError("expected a non-empty list of Tensors")
        if not extra:  # cat joins along an existing axis, which a 0-d tensor lacks
            for i, shape in enumerate(shapes):
                if not shape:
                    raise RuntimeError(f"zero-dimensional tensor (at position {i}) cannot be concatenated")
        return base(params, shapes[0])

    return normalize


cat = define(
    "cat", _cat, cat_vjp, linear=True, variadic=True, normalize=_variadic_axes(0),
    doc="join tensors along an existing axis",
    function=("cat", "concat", "concatenate"),
)


def stack_vjp(g, xs_shape, *, dim):
    tail = (slice(None),) * (-dim - 1)
    return [getitem(g, index=(Ellipsis, i, *tail)) for i in range(len(xs_shape))]


def _stack(xp, xs, *, dim=0):
    for i, x in enumerate(xs[1:], 1):
        if x.shape != xs[0].shape:
            raise RuntimeError(
                f"stack expects each tensor to be equal size, but got {list(xs[0].shape)} at entry 0 "
                f"and {list(x.shape)} at entry {i}"
            )
    return xp.stack(xs, axis=dim)


stack = define(
    "stack", _stack, stack_vjp, linear=True, variadic=True, normalize=_variadic_axes(1),
    doc="join tensors along a new axis",
    function="stack",
)

# ---- copies, dtypes, devices -----------------------------------------------

clone = define(
    "clone", lambda xp, x: x.copy(), lambda g: g, linear=True, doc="a copy that stays in the graph",
    function="clone", method="clone",
)
to_dtype = define(
    "to_dtype",
    lambda xp, x, *, dtype: x.astype(backend.dtype(dtype).np),
    lambda g, x: to_dtype(g, dtype=backend.dtype(x.dtype).name),
    linear=True,
    grad_fn="ToCopyBackward0",
    doc="convert to dtype",
    method=("float", "double", "half", "long", "int", "bool"),
)
to_device = define(
    "to_device",
    lambda xp, x, *, device: backend.to_device(x, backend.device(device)),
    lambda g, x: to_device(g, device=str(backend.device_of(getattr(x, "_data", x)))),
    linear=True,
    grad_fn="ToCopyBackward0",
    doc="copy to device",
    method=("cpu", "cuda"),
    public=False,
)


def _copy_from(xp, x, src):
    try:
        return xp.array(xp.broadcast_to(src, x.shape), dtype=x.dtype)
    except ValueError as error:  # numpy's word for it; PyTorch raises a RuntimeError
        raise RuntimeError(
            f"copy_: the source's shape {list(getattr(src, 'shape', ()))} cannot be broadcast to the destination's "
            f"shape {list(x.shape)}"
        ) from error


copy_from = define(
    "copy_from",
    _copy_from,
    (lambda g: g * 0, lambda g: g),
    linear=True,
    broadcast=True,
    grad_fn="CopyBackwards",
    batch="loop",  # its params name whole-tensor positions or shapes
    doc="src broadcast to x's shape and dtype (x.copy_(src) out of place)",
    inplace="copy_",
    public=False,
)
fill = define(
    "fill",
    lambda xp, x, *, value: xp.full(x.shape, value, dtype=x.dtype),
    lambda g: g * 0,
    lambda dx: dx * 0,
    doc="x's shape filled with value",
    inplace="fill_",
)

# ---- nn layers: activations -------------------------------------------------------------


@backend.fused
def _leaky_relu_backward(xp, grad, x, *, negative_slope=0.01):
    return xp.where(x > 0, grad, grad * negative_slope)


leaky_relu = define(
    "leaky_relu",
    lambda xp, x, *, negative_slope=0.01: xp.where(x > 0, x, x * negative_slope),
    lambda g, x, *, negative_slope: leaky_relu_backward(g, x, negative_slope=negative_slope),
    lambda dx, x, *, negative_slope: leaky_relu_backward(dx, x, negative_slope=negative_slope),
    grad_fn="LeakyReluBackward0",
    doc="x where x > 0, else negative_slope * x",
)
# Piecewise linear in x, so x's own gradient is zero (as threshold_backward's).
leaky_relu_backward = define(
    "leaky_relu_backward",
    _leaky_relu_backward,
    (lambda g, x, *, negative_slope: leaky_relu_backward(g, x, negative_slope=negative_slope), lambda g: g * 0),
    lambda dgrad, x, *, negative_slope: leaky_relu_backward(dgrad, x, negative_slope=negative_slope),
    broadcast=True,
    grad_fn="LeakyReluBackwardBackward0",
    doc="grad where x > 0, else negative_slope * grad (leaky_relu's derivative)",
    public=False,
)


def _elu(xp, x, *, alpha=1.0, scale=1.0, input_scale=1.0):
    return xp.where(x > 0, x * scale, xp.expm1(x * input_scale) * (alpha * scale))


def elu_slope(x, *, alpha, scale, input_scale):
    """d elu / dx: scale above 0, alpha scale input_scale e^(input_scale x) below."""
    return where(x > 0, scale, exp(x * input_scale) * (alpha * scale * input_scale))


elu = define(
    "elu",
    _elu,
    lambda g, x, **p: g * elu_slope(x, **p),
    lambda dx, x, **p: dx * elu_slope(x, **p),
    doc="x above 0, alpha (e^x - 1) below (scale and input_scale as PyTorch's elu)",
)


def silu_slope(x):
    """d (x sigmoid(x)) / dx = s (1 + x (1 - s))."""
    s = sigmoid(x)
    return s * (x * (1 - s) + 1)


silu = define(
    "silu",
    lambda xp, x: x * backend.expit(x),
    lambda g, x: g * silu_slope(x),
    lambda dx, x: dx * silu_slope(x),
    doc="x * sigmoid(x)",
)

# ---- nn layers: sliding windows ----------------------------------------------------------
# Layer inputs are (..., N, C, *spatial): what precedes the channel axis (the batch, and the
# leading batch axes a cotangent or tangent may carry) is carried along. A window's elements
# are gathered by one strided slice per kernel offset (im2col) and summed back by the same
# slices (col2im), with no stride tricks, so the same code runs on numpy and cupy.


def _offsets(kernel) -> list:
    return list(itertools.product(*(range(k) for k in kernel)))


def _window_slices(offset, stride, dilation, out_size) -> tuple:
    return tuple(
        slice(o * d, o * d + s * (n - 1) + 1, s) for o, s, d, n in zip(offset, stride, dilation, out_size)
    )


def _padded(xp, x, padding, value=0.0):
    if not builtins.any(lo or hi for lo, hi in padding):
        return x
    widths = [(0, 0)] * (x.ndim - len(padding)) + [tuple(p) for p in padding]
    return xp.pad(x, widths, mode="constant", constant_values=value)


def window_out_size(size, kernel, stride, padding, dilation) -> tuple:
    return tuple(
        (n + lo + hi - d * (k - 1) - 1) // s + 1
        for n, k, s, (lo, hi), d in zip(size, kernel, stride, padding, dilation)
    )


def unfold_windows(xp, x, *, kernel, stride, padding, dilation, value=0.0):
    """im2col: (..., C, *S) -> (..., C, K, *S_out), the K = prod(kernel) elements of every window
    (``padding`` is one (before, after) pair per spatial axis, filled with ``value``)."""
    d = len(kernel)
    out_size = window_out_size(x.shape[-d:], kernel, stride, padding, dilation)
    padded = _padded(xp, x, padding, value)
    return xp.stack(
        [padded[(Ellipsis, *_window_slices(o, stride, dilation, out_size))] for o in _offsets(kernel)], axis=-d - 1
    )


def fold_windows(xp, cols, *, size, kernel, stride, padding, dilation):
    """col2im, the adjoint of ``unfold_windows``: (..., C, K, *S_out) -> (..., C, *size), each
    element the sum over the windows that hold it."""
    d = len(kernel)
    out_size = cols.shape[-d:]
    padded_size = tuple(n + lo + hi for n, (lo, hi) in zip(size, padding))
    canvas = xp.zeros(cols.shape[: -d - 1] + padded_size, dtype=cols.dtype)
    every = (slice(None),) * d
    for k, offset in enumerate(_offsets(kernel)):
        canvas[(Ellipsis, *_window_slices(offset, stride, dilation, out_size))] += cols[(Ellipsis, k, *every)]
    crop = tuple(slice(lo, lo + n) for n, (lo, _) in zip(size, padding))
    return xp.ascontiguousarray(canvas[(Ellipsis, *crop)])


def _spatial_tuple(value, d: int, name: str) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            return (int(value[0]),) * d
        if len(value) != d:
            raise RuntimeError(
                f"expected {name} to be a single integer value or a list of {d} values to match the "
                f"convolution dimensions, but got {name}={list(value)}"
            )
        return tuple(int(v) for v in value)
    return (int(value),) * d


def _shape_text_of(shape) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


# ---- nn layers: convolution --------------------------------------------------------------
# out = conv(x, w) + b is bilinear in (x, w); with T(x, w, g) = <conv(x, w), g> its two partial
# derivatives are conv_input_grad(g, w) = dT/dx and conv_weight_grad(x, g) = dT/dw. The
# derivatives of those two are again conv, conv_input_grad and conv_weight_grad, so the three
# ops close under differentiation (derivatives of any order).


def _conv_padding(padding, kernel, dilation, stride) -> tuple:
    """PyTorch's padding (an int, one per axis, 'valid' or 'same') as (before, after) pairs;
    'same' puts the odd element of an even total after, as PyTorch does."""
    d = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * d
        if padding != "same":
            raise RuntimeError(f"Invalid padding string '{padding}', should be one of {{'valid', 'same'}}")
        if builtins.any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        totals = [dl * (k - 1) for k, dl in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    if isinstance(padding, (tuple, list)) and padding and isinstance(padding[0], (tuple, list)):
        return tuple((int(lo), int(hi)) for lo, hi in padding)
    return tuple((p, p) for p in _spatial_tuple(padding, d, "padding"))


def _conv_params(params, x_shape, w_shape, b_shape=()):
    """Axis params as tuples (``padding`` as pairs), checked against the shapes as PyTorch does."""
    stride = params["stride"]
    d = len(stride) if isinstance(stride, tuple) else len(w_shape) - 2
    stride = _spatial_tuple(stride, d, "stride")
    dilation = _spatial_tuple(params["dilation"], d, "dilation")
    groups = int(params["groups"])
    kernel = tuple(w_shape[-d:])
    padding = _conv_padding(params["padding"], kernel, dilation, stride)
    if builtins.any(s <= 0 for s in stride) or builtins.any(dl <= 0 for dl in dilation) or groups <= 0:
        raise RuntimeError("non-positive stride, dilation or groups is not supported")
    if len(x_shape) < d + 2:
        raise RuntimeError(
            f"Expected {d + 1}D (unbatched) or {d + 2}D (batched) input to conv{d}d, but got input of size: "
            f"{_shape_text_of(x_shape)}"
        )
    out_channels = w_shape[-d - 2]
    if out_channels % groups:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, but got weight "
            f"of size [{_shape_text_of(w_shape)}] instead"  # PyTorch's doubled brackets
        )
    if x_shape[-d - 1] != w_shape[-d - 1] * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {_shape_text_of(w_shape)}, expected input"
            f"{_shape_text_of(x_shape)} to have {w_shape[-d - 1] * groups} channels, but got {x_shape[-d - 1]} "
            "channels instead"
        )
    if b_shape is not None and len(b_shape) == 1 and b_shape[0] != out_channels:
        raise RuntimeError(
            f"Given weight of size {_shape_text_of(w_shape)}, expected bias to be 1-dimensional with "
            f"{out_channels} elements, but got bias of size {_shape_text_of(b_shape)} instead"
        )
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(x_shape[-d:], padding))
    reach = tuple(dl * (k - 1) + 1 for k, dl in zip(kernel, dilation))
    if builtins.any(p < r for p, r in zip(padded, reach)):
        raise RuntimeError(
            f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). Kernel size: "
            f"({' x '.join(map(str, reach))}). Kernel size can't be greater than actual input size"
        )
    return {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


def _grouped_weight(w, d, groups):
    """(*lead, O, C/G, *K) -> (*lead, 1, G, O/G, C/G * K): one matrix per group, with an axis for N."""
    out_channels = w.shape[-d - 2]
    return w.reshape(w.shape[: -d - 2] + (1, groups, out_channels // groups, -1))


def _conv(xp, x, w, b, *, stride, padding, dilation, groups):
    d = len(stride)
    cols = unfold_windows(xp, x, kernel=w.shape[-d:], stride=stride, padding=padding, dilation=dilation)
    out_size = cols.shape[-d:]
    cols = cols.reshape(cols.shape[: -d - 2] + (groups, -1, numel(out_size)))  # (..., N, G, C/G K, L)
    out = _grouped_weight(w, d, groups) @ cols  # (..., N, G, O/G, L)
    out = out.reshape(out.shape[:-3] + (w.shape[-d - 2],) + out_size)
    if b is None:
        return out
    # b (..., O) as (..., 1, O, 1...): any batch axes it carries line up with x's, in front of N.
    bias = b.reshape(b.shape[:-1] + (1, b.shape[-1]) + (1,) * d)
    if b.dtype == out.dtype and bias.ndim <= out.ndim:
        out += bias  # into the product's own fresh array: no second allocation
        return out
    return out + bias


def _conv_input_grad(xp, grad, w, *, size, stride, padding, dilation, groups):
    d = len(stride)
    kernel = w.shape[-d:]
    grad_groups = grad.reshape(grad.shape[: -d - 1] + (groups, -1, numel(grad.shape[-d:])))  # (..., N, G, O/G, L)
    cols = _grouped_weight(w, d, groups).swapaxes(-1, -2) @ grad_groups  # (..., N, G, C/G K, L)
    cols = cols.reshape(cols.shape[:-3] + (-1, numel(kernel)) + tuple(grad.shape[-d:]))
    return fold_windows(xp, cols, size=size, kernel=kernel, stride=stride, padding=padding, dilation=dilation)


def _conv_weight_grad(xp, x, grad, *, kernel, stride, padding, dilation, groups):
    d = len(stride)
    cols = unfold_windows(xp, x, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    cols = cols.reshape(cols.shape[: -d - 2] + (groups, -1, numel(cols.shape[-d:])))  # (..., N, G, C/G K, L)
    grad_groups = grad.reshape(grad.shape[: -d - 1] + (groups, -1, numel(grad.shape[-d:])))  # (..., N, G, O/G, L)
    per_sample = grad_groups @ cols.swapaxes(-1, -2)  # (..., N, G, O/G, C/G K)
    total = per_sample.sum(axis=-4)
    return total.reshape(total.shape[:-3] + (grad.shape[-d - 1], -1) + tuple(kernel))


def _conv_size(shapes, params) -> int:
    x, w = shapes[0], shapes[1]
    d = len(params["stride"])
    kernel = w[-d:]
    out_size = window_out_size(x[-d:], kernel, params["stride"], params["padding"], params["dilation"])
    return numel(x[: -d - 1]) * int(w[-d - 2]) * numel(out_size)


def _bias_grad(g, d):
    return sum(g, dim=(-d - 2, *range(-d, 0)))


def conv_jvp(dx, dw, db, x, w, b, **p):
    d = len(p["stride"])
    out = convolution(dx, w, None, **p) + convolution(x, dw, None, **p)
    if b is None or not hasattr(db, "shape"):
        return out
    return out + reshape(db, shape=lead(db, b) + (1, b.shape[0]) + (1,) * d)


convolution = define(
    "convolution",
    _conv,
    (
        lambda g, w, x_shape, **p: conv_input_grad(g, w, size=tuple(x_shape[-len(p["stride"]):]), **p),
        lambda g, x, w_shape, **p: conv_weight_grad(x, g, kernel=tuple(w_shape[-len(p["stride"]):]), **p),
        lambda g, **p: _bias_grad(g, len(p["stride"])),
    ),
    conv_jvp,
    normalize=lambda params, x_shape, w_shape, b_shape=(): _conv_params(params, x_shape, w_shape, b_shape),
    grad_fn="ConvolutionBackward0",
    doc="N-d convolution (cross-correlation) of x (N, C, *S) with w (O, C/groups, *K), plus b",
    estimate=_conv_size,
)
conv_input_grad = define(
    "conv_input_grad",
    _conv_input_grad,
    (
        lambda g, w, *, size, **p: convolution(g, w, None, **p),
        lambda g, grad, w_shape, *, size, **p: conv_weight_grad(g, grad, kernel=tuple(w_shape[-len(size):]), **p),
    ),
    lambda dgrad, dw, grad, w, *, size, **p: (
        conv_input_grad(dgrad, w, size=size, **p) + conv_input_grad(grad, dw, size=size, **p)
    ),
    grad_fn="ConvolutionBackwardBackward0",
    doc="the gradient of a convolution with respect to its input (a transposed convolution)",
    public=False,
    estimate=lambda shapes, params: numel(shapes[0][: -len(params["size"]) - 1])
    * int(shapes[1][-len(params["size"]) - 1]) * int(params["groups"]) * numel(params["size"]),
)
conv_weight_grad = define(
    "conv_weight_grad",
    _conv_weight_grad,
    (
        lambda g, grad, x_shape, *, kernel, **p: conv_input_grad(grad, g, size=tuple(x_shape[-len(kernel):]), **p),
        lambda g, x, *, kernel, **p: convolution(x, g, None, **p),
    ),
    lambda dx, dgrad, x, grad, *, kernel, **p: (
        conv_weight_grad(dx, grad, kernel=kernel, **p) + conv_weight_grad(x, dgrad, kernel=kernel, **p)
    ),
    grad_fn="ConvolutionBackwardBackward0",
    doc="the gradient of a convolution with respect to its weight",
    public=False,
    estimate=lambda shapes, params: int(shapes[1][-len(params["kernel"]) - 1])
    * int(shapes[0][-len(params["kernel"]) - 1]) // int(params["groups"]) * numel(params["kernel"]),
)

# ---- nn layers: pooling --------------------------------------------------------------------


def _pool_params(params, x_shape, *rest):
    """kernel_size, stride (default: the kernel), padding and dilation as tuples, checked as PyTorch does."""
    kernel = params["kernel_size"]
    d = len(kernel) if isinstance(kernel, (tuple, list)) and len(kernel) > 1 else 2
    kernel = _spatial_tuple(kernel, d, "kernel_size")
    stride = params.get("stride")
    stride = kernel if stride is None or stride == () or stride == [] else _spatial_tuple(stride, d, "stride")
    padding = _spatial_tuple(params.get("padding", 0), d, "padding")
    fixed = {**params, "kernel_size": kernel, "stride": stride, "padding": padding}
    dilation = _spatial_tuple(params["dilation"], d, "dilation") if "dilation" in params else (1,) * d
    if "dilation" in params:
        fixed["dilation"] = dilation
    if builtins.any(k <= 0 for k in kernel) or builtins.any(s <= 0 for s in stride):
        raise RuntimeError("kernel_size and stride of a pooling must be greater than zero")
    for p, k, dl in zip(padding, kernel, dilation):
        if p < 0 or p > (dl * (k - 1) + 1) // 2:
            raise RuntimeError(
                f"pad should be at most half of effective kernel size, but got pad={p}, kernel_size={k} and "
                f"dilation={dl}"
            )
    if len(x_shape) < d + 1:
        raise RuntimeError(f"Expected {d + 1}D or {d + 2}D input to a {d}-d pooling, but got input of size: "
                           f"{_shape_text_of(x_shape)}")
    out_size, _ = pool_geometry(x_shape[-d:], kernel, stride, padding, dilation, fixed["ceil_mode"])
    if builtins.any(n <= 0 for n in out_size):
        raise RuntimeError(
            f"Given input size: ({'x'.join(map(str, x_shape[-d - 1:]))}). Calculated output size: "
            f"({'x'.join(map(str, (x_shape[-d - 1], *out_size)))}). Output size is too small"
        )
    return fixed


def pool_geometry(size, kernel, stride, padding, dilation, ceil_mode):
    """(output size, (before, after) padding pairs) of a pooling; ``ceil_mode`` adds a last, partial
    window where one starts inside the input or its left padding (PyTorch's pooling_output_shape)."""
    out_size, pairs = [], []
    for n, k, s, p, dl in zip(size, kernel, stride, padding, dilation):
        span = n + 2 * p - dl * (k - 1) - 1
        out = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= n + p:
            out -= 1
        out_size.append(out)
        pairs.append((p, builtins.max((out - 1) * s + dl * (k - 1) + 1 - n - p, 0)))
    return tuple(out_size), tuple(pairs)


def _pool_windows(xp, x, value, *, kernel_size, stride, padding, dilation, ceil_mode):
    d = len(kernel_size)
    _, pairs = pool_geometry(x.shape[-d:], kernel_size, stride, padding, dilation, ceil_mode)
    return unfold_windows(xp, x, kernel=kernel_size, stride=stride, padding=pairs, dilation=dilation, value=value)


def _pool_size(shapes, params) -> int:
    x = shapes[0]
    d = len(params["kernel_size"])
    out_size, _ = pool_geometry(x[-d:], params["kernel_size"], params["stride"], params["padding"],
                                params.get("dilation", (1,) * d), params["ceil_mode"])
    return numel(x[:-d]) * numel(out_size)


def _window_views(xp, x, value, p) -> list:
    """The K = prod(kernel) strided views of x (padded with ``value``), one per kernel offset: view k
    holds element k of every window, each (..., C, *S_out). No copy of the windows is made."""
    d = len(p["kernel_size"])
    out_size, pairs = pool_geometry(x.shape[-d:], p["kernel_size"], p["stride"], p["padding"], p["dilation"],
                                    p["ceil_mode"])
    padded = _padded(xp, x, pairs, value)
    return [padded[(Ellipsis, *_window_slices(o, p["stride"], p["dilation"], out_size))]
            for o in _offsets(p["kernel_size"])]


def _window_argmax(xp, x, p):
    """Each window's first maximum's position k within the window, NaN above everything (PyTorch's
    NaN wins), as small integers. One running comparison per kernel offset over strided views: an
    argmax over a stacked, short, non-last window axis is several times slower and copies x K times."""
    views = _window_views(xp, xp.where(xp.isnan(x), xp.inf, x), -xp.inf, p)
    best = views[0].copy()
    position = xp.uint8 if len(views) <= 256 else xp.int64
    choice = xp.zeros(best.shape, dtype=position)
    for k in range(1, len(views)):
        # k only grows, so the last offset to beat the running maximum is the largest such k:
        # an elementwise maximum, not a masked write (several times slower).
        xp.maximum(choice, (views[k] > best) * position(k), out=choice)
        xp.maximum(best, views[k], out=best)
    return choice


def _max_pool(xp, x, **p):
    d = len(p["kernel_size"])
    choice = _window_argmax(xp, x, p)
    # The values: a running maximum, which propagates NaN as PyTorch's pooling does.
    values = _fold(xp.maximum, _window_views(xp, x, -xp.inf, p))
    # PyTorch's indices: the flat position in the (unpadded) input plane of each window's maximum.
    offsets = xp.asarray(_offsets(p["kernel_size"]), dtype=xp.int64)  # (K, d)
    flat = xp.zeros(choice.shape, dtype=xp.int64)
    out_size = choice.shape[-d:]
    for axis in range(d):
        starts = xp.arange(out_size[axis], dtype=xp.int64) * p["stride"][axis] - p["padding"][axis]
        starts = starts.reshape((-1,) + (1,) * (d - axis - 1))
        flat = flat * x.shape[-d + axis] + starts + offsets[choice, axis] * p["dilation"][axis]
    return values, flat


def _max_pool_backward(xp, grad, x, **p):
    """Each window's grad added at its maximum: fold_windows of the one-hot windows, summed one
    kernel offset at a time, without building the (..., K, *S_out) one-hot array."""
    d = len(p["kernel_size"])
    choice = _window_argmax(xp, x, p)
    out_size, pairs = pool_geometry(x.shape[-d:], p["kernel_size"], p["stride"], p["padding"], p["dilation"],
                                    p["ceil_mode"])
    lead_shape = backend.broadcast_shapes(grad.shape[:-d], choice.shape[:-d])
    padded_size = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape[-d:], pairs))
    canvas = xp.zeros(lead_shape + padded_size, dtype=grad.dtype)
    zero = xp.zeros((), dtype=grad.dtype)
    for k, offset in enumerate(_offsets(p["kernel_size"])):
        canvas[(Ellipsis, *_window_slices(offset, p["stride"], p["dilation"], out_size))] += xp.where(
            choice == k, grad, zero)
    crop = tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape[-d:], pairs))
    return xp.ascontiguousarray(canvas[(Ellipsis, *crop)])


def _max_pool_select(xp, y, x, **p):
    choice = _window_argmax(xp, x, p)
    views = _window_views(xp, y, 0.0, p)
    out = views[0]
    for k in range(1, len(views)):
        out = xp.where(choice == k, views[k], out)
    return xp.ascontiguousarray(out) if out is views[0] else out


def zeros_for(g, out_shape, x):
    """x-shaped zeros with g's batch axes: the gradient of an input the result is piecewise constant in."""
    return expand(fill(x, value=0.0), shape=lead(g, out_shape) + tuple(x.shape))


_POOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}

max_pool2d = define(
    "max_pool2d",
    lambda xp, x, *, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False: _max_pool(
        xp, x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode
    ),
    lambda g, x, **p: max_pool2d_backward(g, x, **p),
    lambda dx, x, **p: max_pool2d_select(dx, x, **p),
    normalize=_pool_params,
    extra_outputs=1,
    grad_fn="MaxPool2DWithIndicesBackward0",
    doc="(maximum of each window, its flat index in the input plane); the gradient goes to the maximum",
    estimate=_pool_size,
)
max_pool2d_backward = define(
    "max_pool2d_backward",
    lambda xp, grad, x, *, kernel_size, stride, padding, dilation, ceil_mode: _max_pool_backward(
        xp, grad, x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode
    ),
    (lambda g, x, **p: max_pool2d_select(g, x, **p), zeros_for),
    lambda dgrad, x, **p: max_pool2d_backward(dgrad, x, **p),
    grad_fn="MaxPool2DWithIndicesBackwardBackward0",
    doc="grad sent to each window's maximum of x (max_pool2d's derivative)",
    public=False,
    estimate=lambda shapes, params: numel(shapes[0][: -len(params["kernel_size"])])
    * numel(shapes[1][-len(params["kernel_size"]):]),
)
max_pool2d_select = define(
    "max_pool2d_select",
    lambda xp, y, x, *, kernel_size, stride, padding, dilation, ceil_mode: _max_pool_select(
        xp, y, x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode
    ),
    (lambda g, x, **p: max_pool2d_backward(g, x, **p), zeros_for),
    lambda dy, x, **p: max_pool2d_select(dy, x, **p),
    grad_fn="MaxPool2DWithIndicesBackward0",
    doc="y's element at each window's maximum of x (max_pool2d's jvp)",
    public=False,
)


def _avg_divisor(xp, size, dtype, *, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """What each window's sum is divided by: the override, or the window's element count (counting
    the zero padding, not the part ceil_mode adds past it, with count_include_pad)."""
    if divisor_override:
        return float(divisor_override)
    d = len(kernel_size)
    out_size, _ = pool_geometry(size, kernel_size, stride, padding, (1,) * d, ceil_mode)
    divisor = None
    for axis, (n, k, s, p, m) in enumerate(zip(size, kernel_size, stride, padding, out_size)):
        starts = xp.arange(m) * s
        if count_include_pad:
            counts = xp.minimum(starts + k, n + 2 * p) - starts
        else:
            counts = xp.minimum(starts + k, n + p) - xp.maximum(starts, p)
        counts = counts.astype(dtype).reshape((-1,) + (1,) * (d - axis - 1))
        divisor = counts if divisor is None else divisor * counts
    return divisor


def _avg_params(p):
    return {k: v for k, v in p.items() if k not in ("count_include_pad", "divisor_override")}


def _avg_pool(xp, x, **p):
    d = len(p["kernel_size"])
    cols = _pool_windows(xp, x, 0.0, dilation=(1,) * d, **_avg_params(p))
    return cols.sum(axis=-d - 1) / _avg_divisor(xp, x.shape[-d:], x.dtype, **p)


def _avg_pool_backward(xp, grad, *, size, **p):
    d = len(p["kernel_size"])
    share = grad / _avg_divisor(xp, size, grad.dtype, **p)
    cols = xp.broadcast_to(xp.expand_dims(share, -d - 1),
                           share.shape[:-d] + (numel(p["kernel_size"]),) + share.shape[-d:])
    _, pairs = pool_geometry(size, p["kernel_size"], p["stride"], p["padding"], (1,) * d, p["ceil_mode"])
    return fold_windows(xp, cols, size=size, kernel=p["kernel_size"], stride=p["stride"], padding=pairs,
                        dilation=(1,) * d)


avg_pool2d = define(
    "avg_pool2d",
    lambda xp, x, *, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
    divisor_override=None: _avg_pool(
        xp, x, kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
        count_include_pad=count_include_pad, divisor_override=divisor_override,
    ),
    lambda g, x_shape, **p: avg_pool2d_backward(g, size=tuple(x_shape[-len(p["kernel_size"]):]), **p),
    linear=True,
    normalize=_pool_params,
    grad_fn="AvgPool2DBackward0",
    doc="mean of each window (count_include_pad, divisor_override and ceil_mode as PyTorch's)",
    estimate=_pool_size,
)
avg_pool2d_backward = define(
    "avg_pool2d_backward",
    lambda xp, grad, *, size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override:
    _avg_pool_backward(
        xp, grad, size=size, kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
        count_include_pad=count_include_pad, divisor_override=divisor_override,
    ),
    lambda g, *, size, **p: avg_pool2d(g, **p),
    linear=True,
    grad_fn="AvgPool2DBackwardBackward0",
    doc="grad spread evenly over each window (avg_pool2d's derivative)",
    public=False,
    estimate=lambda shapes, params: numel(shapes[0][: -len(params["size"])]) * numel(params["size"]),
)


def _adaptive_matrix(xp, size, out, dtype):
    """(out, size): row i averages x[floor(i size / out) : ceil((i + 1) size / out)], PyTorch's windows."""
    matrix = xp.zeros((out, size), dtype=dtype)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _adaptive_params(params, x_shape, *rest):
    output_size = params["output_size"]
    d = len(output_size) if isinstance(output_size, (tuple, list)) else 2
    if len(x_shape) < d + 1:
        raise RuntimeError(f"adaptive_avg_pool{d}d(): Expected {d + 1}D or {d + 2}D tensor, but got "
                           f"{_shape_text_of(x_shape)}")
    if not isinstance(output_size, (tuple, list)):
        output_size = (output_size,) * d
    if len(output_size) != d:
        raise RuntimeError(f"adaptive_avg_pool2d: output_size must be 2, but got {len(output_size)}")
    resolved = tuple(int(x_shape[-d + i]) if n is None else int(n) for i, n in enumerate(output_size))
    if builtins.any(n <= 0 for n in resolved):
        raise RuntimeError(f"adaptive_avg_pool2d: elements of output_size must be greater than 0, got {resolved}")
    return {"output_size": resolved}


def _adaptive_avg_pool(xp, x, *, output_size, transpose=False):
    """x (..., *S) times one averaging matrix A (out, in) per spatial axis; ``transpose`` applies
    A^T instead, mapping a gradient (..., *output) back to (..., *output_size) = the input's size."""
    d = len(output_size)
    out = x
    for axis, target in enumerate(output_size):
        current = x.shape[-d + axis]
        if transpose:
            matrix = _adaptive_matrix(xp, target, current, x.dtype)  # (current, target): g @ A
        else:
            matrix = _adaptive_matrix(xp, current, target, x.dtype).T  # x @ A^T
        out = xp.moveaxis(xp.moveaxis(out, -d + axis, -1) @ matrix, -1, -d + axis)
    return xp.ascontiguousarray(out)


adaptive_avg_pool2d = define(
    "adaptive_avg_pool2d",
    lambda xp, x, *, output_size: _adaptive_avg_pool(xp, x, output_size=output_size),
    lambda g, x_shape, *, output_size: adaptive_avg_pool2d_backward(
        g, size=tuple(x_shape[-len(output_size):]), output_size=output_size
    ),
    linear=True,
    normalize=_adaptive_params,
    grad_fn="AdaptiveAvgPool2DBackward0",
    doc="mean over output_size windows that tile the input (None keeps an axis' size)",
    estimate=lambda shapes, params: numel(shapes[0][: -len(params["output_size"])]) * numel(params["output_size"]),
)
adaptive_avg_pool2d_backward = define(
    "adaptive_avg_pool2d_backward",
    lambda xp, grad, *, size, output_size: _adaptive_avg_pool(xp, grad, output_size=size, transpose=True),
    lambda g, *, size, output_size: adaptive_avg_pool2d(g, output_size=output_size),
    linear=True,
    grad_fn="AdaptiveAvgPool2DBackwardBackward0",
    doc="grad spread evenly over each adaptive window (adaptive_avg_pool2d's derivative)",
    public=False,
    estimate=lambda shapes, params: numel(shapes[0][: -len(params["size"])]) * numel(params["size"]),
)

# ---- nn layers: normalization ------------------------------------------------------------
# Both norms standardize x over some axes, xhat = (x - mean) / sqrt(var + eps) with the biased
# variance, then scale and shift by per-feature w and b. With gw = g w (summed back over the
# standardized axes A, written mean_A), the input's gradient is the projection
#     dx = invstd (gw - mean_A(gw) - xhat mean_A(gw xhat)),
# and the jvp is the same projection applied to the tangent dx: the map is self-adjoint.


def _batch_axes(x) -> tuple:
    """Batch norm standardizes over every axis but the channels (axis 1), as negative axes."""
    return (-x.ndim,) + tuple(range(-x.ndim + 2, 0))


def _affine_shape(x, features: tuple, kind: str) -> tuple:
    if kind == "batch":
        return (1, features[0]) + (1,) * (x.ndim - 2)
    return (1,) * (x.ndim - len(features)) + tuple(features)


def _broadcast_feature(p, x, features: tuple, kind: str):
    return reshape(p, shape=tuple(p.shape[: p.ndim - len(features)]) + _affine_shape(x, features, kind))


def standardized(x, dims, eps):
    """(xhat, invstd) over dims, in table ops (so a rule using them is differentiable again)."""
    centered = x - mean(x, dim=dims, keepdim=True)
    invstd = rsqrt(mean(centered * centered, dim=dims, keepdim=True) + eps)
    return centered * invstd, invstd


def _standardize_projection(gw, xhat, invstd, dims):
    return invstd * (gw - mean(gw, dim=dims, keepdim=True) - xhat * mean(gw * xhat, dim=dims, keepdim=True))


def _norm_rules(kind):
    """vjp (x, w, b) and jvp of batch_norm (kind "batch") or layer_norm ("layer")."""

    def geometry(x, w, params):
        if kind == "batch":
            return _batch_axes(x), (x.shape[1],)
        features = tuple(params["normalized_shape"])
        return tuple(range(-len(features), 0)), features

    def scaled(g, x, w, params):
        _, features = geometry(x, w, params)
        return g if w is None else g * reshape(w, shape=_affine_shape(x, features, kind))

    def vjp_x(g, x, w, **params):
        dims, _ = geometry(x, w, params)
        xhat, invstd = standardized(x, dims, params["eps"])
        return _standardize_projection(scaled(g, x, w, params), xhat, invstd, dims)

    def feature_sum(t, x, features):
        """Sum over x's axes that are not features (t may carry batch axes in front)."""
        if kind == "batch":
            return sum(t, dim=_batch_axes(x))
        return sum(t, dim=tuple(range(-x.ndim, -len(features))))

    def vjp_w(g, x, w, **params):
        dims, features = geometry(x, w, params)
        xhat, _ = standardized(x, dims, params["eps"])
        return feature_sum(g * xhat, x, features)

    def vjp_b(g, x, w, **params):
        _, features = geometry(x, w, params)
        return feature_sum(g, x, features)

    def jvp(dx, dw, db, x, w, b, **params):
        dims, features = geometry(x, w, params)
        xhat, invstd = standardized(x, dims, params["eps"])
        out = scaled(_standardize_projection(dx, xhat, invstd, dims), x, w, params)
        if w is not None and hasattr(dw, "shape"):
            out = out + xhat * _broadcast_feature(dw, x, features, kind)
        if b is not None and hasattr(db, "shape"):
            out = out + _broadcast_feature(db, x, features, kind)
        return out

    return (vjp_x, vjp_w, vjp_b), jvp


def _normalized(xp, x, w, b, dims, features, kind, eps, mean_=None, var_=None):
    if mean_ is None:
        mean_ = x.mean(axis=dims, keepdims=True)
        centered = x - mean_
        var_ = (centered * centered).mean(axis=dims, keepdims=True)
    else:
        centered = x - mean_
    out = centered * (1 / xp.sqrt(var_ + eps))
    affine = _affine_shape(x, features, kind)
    if w is not None:
        out = out * w.reshape(affine)
    if b is not None:
        out = out + b.reshape(affine)
    return out


def _batch_norm(xp, x, w, b, *, eps=1e-5):
    if x.ndim < 2:
        raise ValueError(f"batch_norm expects an input of at least 2 dimensions (N, C, ...), got {x.ndim}")
    if numel(x.shape) // x.shape[1] <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {_shape_text_of(x.shape)}"
        )
    return _normalized(xp, x, w, b, _batch_axes(x), (x.shape[1],), "batch", eps)


batch_norm = define(
    "batch_norm",
    _batch_norm,
    *_norm_rules("batch"),
    grad_fn="NativeBatchNormBackward0",
    doc="x standardized per channel (axis 1) over the batch and spatial axes, times w plus b (training mode)",
    batch="loop",  # axis 1 and the axes it standardizes over are counted from x's front
)


def _channel_view(t, x):
    return reshape(t, shape=(1, x.shape[1]) + (1,) * (x.ndim - 2))


def batch_norm_eval_rules():
    """out = (x - m) invstd w + b with invstd = (v + eps)^-1/2, for given statistics m and v."""

    def slope(x, w, var, eps):
        s = rsqrt(_channel_view(var, x) + eps)
        return s if w is None else s * _channel_view(w, x)

    def vjp_x(g, x, w, running_var, *, eps):
        return g * slope(x, w, running_var, eps)

    def vjp_w(g, x, running_mean, running_var, *, eps):
        xhat = (x - _channel_view(running_mean, x)) * rsqrt(_channel_view(running_var, x) + eps)
        return sum(g * xhat, dim=_batch_axes(x))

    def vjp_b(g, x):
        return sum(g, dim=_batch_axes(x))

    def vjp_mean(g, x, w, running_var, *, eps):
        return -sum(g * slope(x, w, running_var, eps), dim=_batch_axes(x))

    def vjp_var(g, x, w, running_mean, running_var, *, eps):
        centered = x - _channel_view(running_mean, x)
        return sum(g * slope(x, w, running_var, eps) * centered, dim=_batch_axes(x)) * -0.5 / (running_var + eps)

    def jvp(dx, dw, db, drunning_mean, drunning_var, x, w, b, running_mean, running_var, *, eps):
        features = (x.shape[1],)
        s = slope(x, w, running_var, eps)
        centered = x - _channel_view(running_mean, x)
        view = lambda t: _broadcast_feature(t, x, features, "batch")
        out = (dx - view(drunning_mean)) * s - centered * s * view(drunning_var) * 0.5 / view(running_var + eps)
        if w is not None and hasattr(dw, "shape"):
            out = out + centered * rsqrt(_channel_view(running_var, x) + eps) * view(dw)
        if b is not None and hasattr(db, "shape"):
            out = out + view(db)
        return out

    return (vjp_x, vjp_w, vjp_b, vjp_mean, vjp_var), jvp


def _batch_norm_eval(xp, x, w, b, running_mean, running_var, *, eps=1e-5):
    features = (x.shape[1],)
    shape = _affine_shape(x, features, "batch")
    return _normalized(xp, x, w, b, _batch_axes(x), features, "batch", eps,
                       running_mean.reshape(shape), running_var.reshape(shape))


batch_norm_eval = define(
    "batch_norm_eval",
    _batch_norm_eval,
    *batch_norm_eval_rules(),
    grad_fn="NativeBatchNormBackward0",
    doc="x standardized per channel with given statistics (running_mean, running_var), times w plus b (eval mode)",
    batch="loop",  # axis 1 is counted from x's front
)


def _layer_norm_params(params, x_shape, *rest):
    normalized_shape = params["normalized_shape"]
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    normalized_shape = tuple(int(n) for n in normalized_shape)
    k = len(normalized_shape)
    if not k or tuple(x_shape[len(x_shape) - k:]) != normalized_shape:
        raise RuntimeError(
            f"Given normalized_shape={list(normalized_shape)}, expected input with shape "
            f"[*, {', '.join(map(str, normalized_shape))}], but got input of size{_shape_text_of(x_shape)}"
        )
    for name, shape in zip(("weight", "bias"), rest):
        if shape is not None and len(shape) and tuple(shape) != normalized_shape:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                f"{_shape_text_of(shape)} and normalized_shape = {_shape_text_of(normalized_shape)}"
            )
    return {**params, "normalized_shape": normalized_shape}


def _layer_norm(xp, x, w, b, *, normalized_shape, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    return _normalized(xp, x, w, b, dims, tuple(normalized_shape), "layer", eps)


layer_norm = define(
    "layer_norm",
    _layer_norm,
    *_norm_rules("layer"),
    normalize=_layer_norm_params,
    grad_fn="NativeLayerNormBackward0",
    doc="x standardized over its last len(normalized_shape) axes, times w plus b",
    batch="loop",  # a batched weight would need its batch axes in front of x's leading ones
)

# ---- nn layers: embedding ----------------------------------------------------------------


def _embedding_params(params, w_shape, *rest):
    indices = params["indices"]
    if not backend.is_array(indices) or indices.dtype.kind not in "iu":
        raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the following scalar types: "
                           "Long, Int")
    if len(w_shape) < 2:
        raise RuntimeError(f"'weight' must be 2-D, got a weight of size {_shape_text_of(w_shape)}")
    rows = w_shape[-2]  # (under vmap the weight may carry batch axes in front)
    if indices.size and bool(((indices < 0) | (indices >= rows)).any()):
        raise IndexError("index out of range in self")
    padding_idx = params.get("padding_idx")
    if padding_idx is not None:
        if not -rows <= padding_idx < rows:
            raise AssertionError("Padding_idx must be within num_embeddings")
        padding_idx = padding_idx + rows if padding_idx < 0 else padding_idx
    return {**params, "padding_idx": padding_idx}


def embedding_vjp(g, out_shape, w_shape, *, indices, padding_idx):
    """g summed into the rows it was read from; the padding row gets none (PyTorch's padding_idx)."""
    if padding_idx is not None:
        xp = backend.namespace_of(getattr(g, "_data", g))  # the mask goes where g is (indices may be on the host)
        g = where(xp.expand_dims(xp.asarray(indices != padding_idx), -1), g, 0.0)
    return getitem_adjoint(g, shape=lead(g, out_shape) + tuple(w_shape), index=(Ellipsis, indices, slice(None)))


embedding = define(
    "embedding",
    lambda xp, w, *, indices, padding_idx=None: w[..., indices, :],
    embedding_vjp,
    linear=True,
    normalize=_embedding_params,
    grad_fn="EmbeddingBackward0",
    doc="rows of w (num_embeddings, dim) at integer indices",
    estimate=lambda shapes, params: int(params["indices"].size) * int(shapes[0][-1]),
)

# ---- fused losses ------------------------------------------------------------------------
# PyTorch runs these losses as one op each (MseLossBackward0, NllLossBackward0...), and so do we.
# Their inputs come expanded to one shape (``engine.nn.functional`` broadcasts them first), so a
# loss is an elementwise function l of its inputs, then reduced: "none", "sum" or "mean". With
# dl/dinput written in table ops, vjp = spread(g) * dl/dinput and jvp = reduce(sum dinput * dl/dinput).


def loss_reduce(values, ndim: int, reduction: str):
    """Reduce the elementwise loss over its last ``ndim`` axes (earlier ones are batch axes)."""
    if reduction == "none":
        return values
    total = sum(values, dim=tuple(range(-ndim, 0)))
    if reduction == "mean":
        return total / builtins.max(numel(values.shape[values.ndim - ndim:]), 1) if ndim else total
    return total


def loss_spread(g, out, shape, reduction: str):
    """The incoming gradient as each element of the loss receives it."""
    if reduction == "none":
        return g
    spread = reshape(g, shape=lead(g, out) + (1,) * len(shape))
    return spread / builtins.max(numel(shape), 1) if reduction == "mean" and shape else spread


def _check_loss_reduction(params, *shapes):
    if params["reduction"] not in ("none", "mean", "sum"):
        raise ValueError(f"{params['reduction']} is not a valid value for reduction")
    return params


def fused_loss(name, forward, partials, **flags):
    """A loss op from its elementwise ``forward(x, ...)`` (table ops) and one partial per input."""

    def vjp_rule(partial):
        if partial is None:
            return None

        def vjp(g, out, x, *rest, reduction, **params):
            return loss_spread(g, out, x.shape, reduction) * partial(x, *rest, **params)

        vjp.__signature__ = _loss_rule_signature(forward, ("g", "out"))
        return vjp

    def jvp(*values, reduction, **params):
        count = len(partials)
        tangents, inputs = values[:count], values[count + 1:]
        total = None
        for tangent, partial in zip(tangents, partials):
            if partial is None or not hasattr(tangent, "shape"):
                continue
            term = tangent * partial(*inputs, **params)
            total = term if total is None else total + term
        return loss_reduce(total, inputs[0].ndim, reduction)

    jvp.__signature__ = _loss_rule_signature(forward, tuple("d" + n for n in _input_names(forward)) + ("out",))
    return define(
        name,
        forward,
        tuple(vjp_rule(p) for p in partials),
        jvp,
        normalize=_check_loss_reduction,
        batch="loop",  # the reduction runs over all of x's axes
        **flags,
    )


def _input_names(forward) -> tuple:
    import inspect

    return tuple(p.name for p in list(inspect.signature(forward).parameters.values())[1:]
                 if p.kind == p.POSITIONAL_OR_KEYWORD)


def _loss_rule_signature(forward, leading):
    """A rule's signature: ``leading`` names, the forward's inputs, then its keyword params (the
    machinery reads a rule's parameter names to know what to pass it)."""
    import inspect

    params = list(inspect.signature(forward).parameters.values())[1:]
    positional = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in leading]
    positional += [inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params
                   if p.kind == p.POSITIONAL_OR_KEYWORD]
    keywords = [inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY) for p in params if p.kind == p.KEYWORD_ONLY]
    return inspect.Signature(positional + keywords)


def _mse(xp, x, y, *, reduction="mean"):
    return loss_reduce((x - y) * (x - y), x.ndim, reduction)


mse_loss = fused_loss(
    "mse_loss", _mse, (lambda x, y: (x - y) * 2, lambda x, y: (y - x) * 2),
    doc="(x - y)^2, reduced",
)


def huber_slope(x, y, *, delta):
    d = x - y
    return where(abs(d) < delta, d, sign(d) * delta)


def _huber(xp, x, y, *, reduction="mean", delta=1.0):
    d = x - y
    size = abs(d)
    return loss_reduce(where(size < delta, d * d * 0.5, (size - delta * 0.5) * delta), x.ndim, reduction)


huber_loss = fused_loss(
    "huber_loss", _huber,
    (lambda x, y, *, delta: huber_slope(x, y, delta=delta), lambda x, y, *, delta: -huber_slope(x, y, delta=delta)),
    doc="0.5 d^2 where |d| < delta, else delta (|d| - delta / 2), reduced (d = x - y)",
)


def smooth_l1_slope(x, y, *, beta):
    d = x - y
    return where(abs(d) < beta, d / beta, sign(d))


def _smooth_l1(xp, x, y, *, reduction="mean", beta=1.0):
    d = x - y
    size = abs(d)
    return loss_reduce(where(size < beta, d * d * (0.5 / beta), size - beta * 0.5), x.ndim, reduction)


smooth_l1_loss = fused_loss(
    "smooth_l1_loss", _smooth_l1,
    (lambda x, y, *, beta: smooth_l1_slope(x, y, beta=beta), lambda x, y, *, beta: -smooth_l1_slope(x, y, beta=beta)),
    doc="Huber loss divided by beta (beta > 0), reduced",
    grad_fn="SmoothL1LossBackward0",
)


def _clamped_log(x):
    """log x clamped at -100, as PyTorch's binary_cross_entropy takes it."""
    return clamp(log(x), min=-100.0)


def _bce(xp, x, t, w, *, reduction="mean"):
    return loss_reduce(-(t * _clamped_log(x) + (1 - t) * _clamped_log(1 - x)) * w, x.ndim, reduction)


bce_loss = fused_loss(
    "binary_cross_entropy", _bce,
    (
        # PyTorch's: w (x - t) / max(x (1 - x), 1e-12)
        lambda x, t, w: w * (x - t) / clamp(x * (1 - x), min=1e-12),
        lambda x, t, w: w * (_clamped_log(1 - x) - _clamped_log(x)),
        lambda x, t, w: -(t * _clamped_log(x) + (1 - t) * _clamped_log(1 - x)),
    ),
    doc="-w (t log x + (1 - t) log(1 - x)), each log clamped at -100, reduced",
)


def _softplus_of_minus(x):
    """log(1 + e^-x), exact for large |x| (no threshold)."""
    return softplus(-x, beta=1.0, threshold=math.inf)


def _bce_with_logits(xp, x, t, w, pos_weight, *, reduction="mean"):
    terms = (1 - t) * x + ((pos_weight - 1) * t + 1) * _softplus_of_minus(x)
    return loss_reduce(terms * w, x.ndim, reduction)


bce_with_logits_loss = fused_loss(
    "binary_cross_entropy_with_logits", _bce_with_logits,
    (
        # d/dx: (1 - t) - (1 + (p - 1) t) sigmoid(-x)
        lambda x, t, w, pos_weight: ((1 - t) - ((pos_weight - 1) * t + 1) * sigmoid(-x)) * w,
        lambda x, t, w, pos_weight: ((pos_weight - 1) * _softplus_of_minus(x) - x) * w,
        lambda x, t, w, pos_weight: (1 - t) * x + ((pos_weight - 1) * t + 1) * _softplus_of_minus(x),
        lambda x, t, w, pos_weight: t * _softplus_of_minus(x) * w,
    ),
    doc="BCE of sigmoid(x), computed stably: w ((1 - t) x + (1 + (pos_weight - 1) t) log(1 + e^-x)), reduced",
)


def _class_index(target):
    """The index picking x[n, target[n], d...] (class axis 1, or 0 for one sample), behind a leading
    Ellipsis so it serves tangents and cotangents with batch axes too."""
    xp = backend.namespace_of(target)
    if target.ndim == 0:
        return (Ellipsis, target)
    shape = target.shape
    grid = [xp.arange(n).reshape((1,) * i + (n,) + (1,) * (len(shape) - i - 1)) for i, n in enumerate(shape)]
    return (Ellipsis, grid[0], target, *grid[1:])


def _nll_params(params, x_shape):
    params = _check_loss_reduction(params)
    target = params["target"]
    if not backend.is_array(target) or target.dtype.kind not in "iu":
        raise RuntimeError(f"expected scalar type Long but found {getattr(target, 'dtype', type(target).__name__)}")
    expected = tuple(x_shape[:1]) + tuple(x_shape[2:]) if len(x_shape) > 1 else ()
    if tuple(target.shape) != expected:
        raise ValueError(f"Expected target of shape {expected} for input of shape {tuple(x_shape)}, "
                         f"got {tuple(target.shape)}")
    return params


def _nll_weights(xp, target, x_dtype, *, weight, ignore_index):
    """Each position's weight: its class's weight (1 without one), 0 where target is ignore_index;
    and the target with ignored positions at class 0. Host targets and weights move to ``xp``'s device."""
    target = xp.asarray(target)
    weight = None if weight is None else xp.asarray(weight)
    kept = target != ignore_index
    safe = xp.where(kept, target, 0)
    per_position = weight[safe] if weight is not None else xp.ones(target.shape, dtype=x_dtype)
    return (per_position * kept).astype(x_dtype), safe


def _nll(xp, x, *, target, weight=None, ignore_index=-100, reduction="mean"):
    weights, safe = _nll_weights(xp, target, x.dtype, weight=weight, ignore_index=ignore_index)
    losses = -x[_class_index(safe)] * weights
    if reduction == "none":
        return losses
    ndim = target.ndim
    total = losses.sum(axis=tuple(range(-ndim, 0))) if ndim else losses
    return total / weights.sum() if reduction == "mean" else total


def nll_vjp(g, out, x_shape, *, target, weight, ignore_index, reduction):
    xp = backend.namespace_of(getattr(g, "_data", g))
    weights, safe = _nll_weights(xp, target, backend.dtype(g.dtype).np, weight=weight, ignore_index=ignore_index)
    batch = lead(g, out)
    spread = g if reduction == "none" else reshape(g, shape=batch + (1,) * target.ndim)
    if reduction == "mean":
        spread = spread / weights.sum()
    values = spread * -weights
    return getitem_adjoint(values, shape=batch + tuple(x_shape), index=_class_index(safe))


nll_loss = define(
    "nll_loss",
    _nll,
    nll_vjp,
    linear=True,
    normalize=_nll_params,
    doc="-x[n, target[n]] times the class weight, reduced (mean: over the weights)",
    batch="loop",  # target (a param) is shaped for one sample's x
)
