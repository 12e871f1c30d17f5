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
