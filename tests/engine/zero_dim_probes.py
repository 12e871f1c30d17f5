"""0-d probes for every op of the derivative table, for the PyTorch sweep (test_differential_zero_dim.py).

``SWEEP[name]`` lists ``Probe``s for table op ``name``: calls with 0-d inputs through what
users call (Tensor methods, operators, ``engine.<fn>``, ``engine.nn.functional``, in-place
variants), written once for both modules (``call(m, *inputs)`` with ``m`` engine or torch).
Ops taking ``dim`` get dim 0 and -1 (which PyTorch accepts on 0-d), 1 and -2 (out of range),
with and without keepdim; binary ops 0-d with 0-d, 0-d with a vector, a vector with 0-d.
Inputs are drawn from the op's domain in ``opcases`` (``log`` gets positive numbers).
``NOT_SWEPT`` names the ops without probes and why; the sweep fails for an op in neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import ops
from tests.engine.opcases import cases_for, input_domain

VECTOR = (3,)


@dataclass(frozen=True)
class Probe:
    """One call of an op: ``call(m, *inputs)`` with ``m`` engine or torch (``torch_call`` where
    PyTorch spells it differently, e.g. a table op without a public engine name)."""

    op: str
    label: str
    shapes: tuple
    call: object
    torch_call: object = None
    domains: tuple = ()
    float32: bool = False  # computes in float32 on the way: compared to float32 precision

    @property
    def id(self) -> str:
        return f"{self.op}-{self.label}"

    def domain(self, i: int) -> str:
        return input_domain(self.domains, i)


SWEEP: dict[str, list[Probe]] = {}

# Ops of the table with no 0-d probe, and why.
_NEEDS_AXES = ("takes (N, C, *spatial), (N, C) or (*, features) input: PyTorch refuses a 0-d one; the shape "
               "errors are compared with PyTorch in test_differential_torch_layers")
_INTERNAL = "internal derivative op of a layer (no PyTorch function of its own on 0-d tensors)"
NOT_SWEPT = {
    **dict.fromkeys(("convolution", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm",
                     "batch_norm_eval", "layer_norm", "embedding", "nll_loss"), _NEEDS_AXES),
    **dict.fromkeys(("conv_input_grad", "conv_weight_grad", "max_pool2d_backward", "max_pool2d_select",
                     "avg_pool2d_backward", "adaptive_avg_pool2d_backward"), _INTERNAL),
    "first_extreme_mask": "internal helper of the max_dim/min_dim vjp rules (no PyTorch function); its 0-d "
                          "behaviour is swept through the gradients of max(dim)/min(dim) on 0-d tensors",
}


def probe(op, label, call, shapes=((),), torch_call=None, domains=None, float32=False):
    if domains is None:  # the op's own domains from opcases (log gets positive numbers, ...)
        domains = cases_for(op)[0].domains
    SWEEP.setdefault(op, []).append(Probe(op, label, tuple(shapes), call, torch_call, tuple(domains), float32))


def binary_shapes(op, label, call, torch_call=None, domains=None):
    """0-d with 0-d, 0-d with a vector, a vector with 0-d."""
    for shapes, text in ((((), ()), "0d-0d"), (((), VECTOR), "0d-vec"), ((VECTOR, ()), "vec-0d")):
        probe(op, f"{label}-{text}", call, shapes, torch_call, domains)


def dims(op, label, call, keepdim=False, torch_call=None, domains=None):
    """``call(m, x, dim[, keepdim])`` for dim 0 and -1 (valid on 0-d) and 1, -2 (out of range)."""
    for dim in (0, -1, 1, -2):
        for keep in (False, True) if keepdim else (None,):
            args = (dim,) if keep is None else (dim, keep)
            text = f"{label}-dim{dim}" + ("" if keep is None else f"-keepdim{keep}")
            theirs = None if torch_call is None else (lambda m, x, a=args, c=torch_call: c(m, x, *a))
            probe(op, text, lambda m, x, a=args, c=call: c(m, x, *a), torch_call=theirs, domains=domains)


# ---- elementwise: unary ---------------------------------------------------------------------

# The elementwise unary ops: those declaring all four of PyTorch's forms (engine.sin, engine.sin_,
# x.sin(), x.sin_()), as ``ops.unary`` does.
UNARY = [name for name, op in ops.table.items() if op.arity == 1 and op.inplace == (name + "_",) and name in op.methods]

for _name in UNARY:
    probe(_name, "method", lambda m, x, n=_name: getattr(x, n)())
    probe(_name, "function", lambda m, x, n=_name: getattr(m, n)(x))
    probe(_name, "in_place", lambda m, x, n=_name: getattr(x.clone(), n + "_")())
probe("neg", "operator", lambda m, x: -x)
probe("abs", "operator", lambda m, x: abs(x))
probe("relu", "nn_functional", lambda m, x: m.nn.functional.relu(x))
probe("tanh", "nn_functional", lambda m, x: m.nn.functional.tanh(x))
probe("sigmoid", "nn_functional", lambda m, x: m.nn.functional.sigmoid(x))
for _approximate in ("none", "tanh"):
    probe("gelu", f"approximate={_approximate}", lambda m, x, a=_approximate: m.nn.functional.gelu(x, approximate=a))
probe("gelu", "default", lambda m, x: m.nn.functional.gelu(x))
probe("softplus", "default", lambda m, x: m.nn.functional.softplus(x))
probe("softplus", "beta2", lambda m, x: m.nn.functional.softplus(x, beta=2.0))
probe("softplus", "threshold", lambda m, x: m.nn.functional.softplus(x, beta=1.0, threshold=0.1), domains=("positive",))

probe("leaky_relu", "nn_functional", lambda m, x: m.nn.functional.leaky_relu(x, 0.2))
probe("elu", "nn_functional", lambda m, x: m.nn.functional.elu(x, alpha=0.5))
probe("silu", "nn_functional", lambda m, x: m.nn.functional.silu(x))
binary_shapes("leaky_relu_backward", "aten",
              lambda m, x, y: ops.leaky_relu_backward(x, y, negative_slope=0.2),
              lambda m, x, y: m.ops.aten.leaky_relu_backward(x, y, 0.2, False))
# Fused losses on 0-d input and target (PyTorch takes them elementwise, then reduces).
for _reduction in ("mean", "none"):
    probe("mse_loss", _reduction, lambda m, x, y, r=_reduction: m.nn.functional.mse_loss(x, y, reduction=r),
          shapes=((), ()))
    probe("huber_loss", _reduction,
          lambda m, x, y, r=_reduction: m.nn.functional.huber_loss(x, y, reduction=r, delta=0.8), shapes=((), ()))
    probe("smooth_l1_loss", _reduction,
          lambda m, x, y, r=_reduction: m.nn.functional.smooth_l1_loss(x, y, reduction=r, beta=0.5),
          shapes=((), ()))
    probe("binary_cross_entropy", _reduction,
          lambda m, x, t, r=_reduction: m.nn.functional.binary_cross_entropy(x, t.detach(), reduction=r),
          shapes=((), ()), domains=("unit_interval", "unit_interval"))
    probe("binary_cross_entropy_with_logits", _reduction,
          lambda m, x, t, r=_reduction: m.nn.functional.binary_cross_entropy_with_logits(x, t.detach(), reduction=r),
          shapes=((), ()), domains=("real", "unit_interval"))

# The activations' backward ops: PyTorch has them as aten ops (grad, output or input).
_ATEN_BACKWARD = {
    "tanh_backward": (lambda x, y: ops.tanh_backward(x, y), lambda t, x, y: t.ops.aten.tanh_backward(x, y)),
    "sigmoid_backward": (lambda x, y: ops.sigmoid_backward(x, y),
                         lambda t, x, y: t.ops.aten.sigmoid_backward(x, y)),
    "threshold_backward": (lambda x, y: ops.threshold_backward(x, y, threshold=0.0),
                           lambda t, x, y: t.ops.aten.threshold_backward(x, y, 0.0)),
    "gelu_backward": (lambda x, y: ops.gelu_backward(x, y, approximate="tanh"),
                      lambda t, x, y: t.ops.aten.gelu_backward(x, y, approximate="tanh")),
    "softplus_backward": (lambda x, y: ops.softplus_backward(x, y, beta=2.0, threshold=20.0),
                          lambda t, x, y: t.ops.aten.softplus_backward(x, y, 2.0, 20.0)),
}
for _name, (_ours, _theirs) in _ATEN_BACKWARD.items():
    binary_shapes(_name, "aten", lambda m, x, y, f=_ours: f(x, y), lambda m, x, y, f=_theirs: f(m, x, y))

probe("clamp", "min-max", lambda m, x: x.clamp(-0.5, 0.5))
probe("clamp", "min", lambda m, x: m.clamp(x, min=-0.3))
probe("clamp", "max", lambda m, x: x.clamp(max=0.2))
probe("clamp", "in_place", lambda m, x: x.clone().clamp_(-0.5, 0.5))
probe("clamp", "clip", lambda m, x: m.clip(x, -0.5, 0.5))
for _exponent in (2, 3, 0):
    probe("pow_scalar", f"operator-{_exponent}", lambda m, x, e=_exponent: x**e)
probe("pow_scalar", "method-half", lambda m, x: x.pow(0.5), domains=("positive",))
probe("pow_scalar", "in_place", lambda m, x: x.clone().pow_(2))
probe("pow_scalar", "square", lambda m, x: m.square(x))

# ---- elementwise: binary --------------------------------------------------------------------

_BINARY = {
    "add": (lambda m, x, y: x + y, lambda m, x, y: m.add(x, y), lambda m, x, y: x.add(y, alpha=2)),
    "sub": (lambda m, x, y: x - y, lambda m, x, y: m.sub(x, y), lambda m, x, y: x.sub(y, alpha=2)),
    "mul": (lambda m, x, y: x * y, lambda m, x, y: m.mul(x, y), lambda m, x, y: x.mul(y)),
    "div": (lambda m, x, y: x / y, lambda m, x, y: m.div(x, y), lambda m, x, y: x.div(y)),
    "pow": (lambda m, x, y: x**y, lambda m, x, y: m.pow(x, y), lambda m, x, y: x.pow(y)),
    "maximum": (lambda m, x, y: m.maximum(x, y), lambda m, x, y: x.maximum(y), lambda m, x, y: x.max(y)),
    "minimum": (lambda m, x, y: m.minimum(x, y), lambda m, x, y: x.minimum(y), lambda m, x, y: x.min(y)),
}
_IN_PLACE = {"add": "add_", "sub": "sub_", "mul": "mul_", "div": "div_", "pow": "pow_"}
_BINARY_DOMAINS = {"maximum": ("distinct", "distinct_shifted"), "minimum": ("distinct", "distinct_shifted")}
for _name, _calls in _BINARY.items():
    for _label, _call in zip(("operator", "function", "method"), _calls):
        binary_shapes(_name, _label, _call, domains=_BINARY_DOMAINS.get(_name))
    if _name in _IN_PLACE:  # 0-d += vector: PyTorch refuses (the result would not fit)
        binary_shapes(_name, "in_place", lambda m, x, y, n=_IN_PLACE[_name]: getattr(x.clone(), n)(y))
    # A 0-d tensor does not widen a dimensioned one of its category (PyTorch's promotion, not numpy's).
    probe(_name, "0d-float64-vec-float32", lambda m, x, y, c=_calls[0]: c(m, x, y.float()), ((), VECTOR),
          domains=_BINARY_DOMAINS.get(_name), float32=True)
    probe(_name, "vec-float64-0d-float32", lambda m, x, y, c=_calls[0]: c(m, x, y.float()), (VECTOR, ()),
          domains=_BINARY_DOMAINS.get(_name), float32=True)
for _other in (2.0, -1):
    probe("rsub", f"operator-{_other}", lambda m, x, o=_other: o - x)
probe("rsub", "function", lambda m, x: m.sub(2.0, x))
for _base in (2.0, 0.5):
    probe("rpow", f"operator-{_base}", lambda m, x, b=_base: b**x)
probe("rpow", "function", lambda m, x: m.pow(2.0, x))
for _mode in ("floor", "trunc"):
    binary_shapes("div_rounded", _mode, lambda m, x, y, r=_mode: m.div(x, y, rounding_mode=r))
    binary_shapes("div_rounded", f"method-{_mode}", lambda m, x, y, r=_mode: x.div(y, rounding_mode=r))
for _shapes, _text in ((((), (), ()), "all-0d"), (((), VECTOR, ()), "0d-cond-vec-x"),
                       ((VECTOR, (), ()), "vec-cond"), (((), (), VECTOR), "0d-cond-vec-y")):
    probe("where", f"function-{_text}", lambda m, c, x, y: m.where(c, x, y), _shapes)
    probe("where", f"method-{_text}", lambda m, c, x, y: x.where(c, y), _shapes)
probe("where", "0d-float64-vec-float32", lambda m, c, x, y: m.where(c, x, y.float()), ((), (), VECTOR),
      float32=True)
probe("where", "scalar-other", lambda m, c, x: m.where(c, x, 0.0), ((), ()), domains=("bool", "real"))

# ---- comparisons and logic ------------------------------------------------------------------

_COMPARISONS = {
    "eq": lambda m, x, y: x == y, "ne": lambda m, x, y: x != y, "lt": lambda m, x, y: x < y,
    "le": lambda m, x, y: x <= y, "gt": lambda m, x, y: x > y, "ge": lambda m, x, y: x >= y,
}
for _name, _call in _COMPARISONS.items():
    binary_shapes(_name, "operator", _call)
    binary_shapes(_name, "function", lambda m, x, y, n=_name: getattr(m, n)(x, y))
    binary_shapes(_name, "method", lambda m, x, y, n=_name: getattr(x, n)(y))
    probe(_name, "scalar", lambda m, x, c=_call: c(m, x, 0.5))
binary_shapes("logical_and", "operator", lambda m, x, y: x & y)
binary_shapes("logical_or", "operator", lambda m, x, y: x | y)
probe("logical_not", "operator", lambda m, x: ~x)
probe("logical_not", "method", lambda m, x: x.logical_not())
probe("isnan", "function", lambda m, x: m.isnan(x))
probe("isnan", "nan", lambda m, x: m.isnan(x / 0 * 0))
probe("isfinite", "function", lambda m, x: m.isfinite(x))
probe("isfinite", "inf", lambda m, x: m.isfinite(x / 0))

# ---- linear algebra: PyTorch refuses 0-d operands (and so must we, with its RuntimeError) -----

for _label, _call in (("operator", lambda m, x, y: x @ y), ("function", lambda m, x, y: m.matmul(x, y)),
                      ("method", lambda m, x, y: x.matmul(y))):
    binary_shapes("matmul", _label, _call)
probe("matmul", "mm-0d", lambda m, x, y: m.mm(x, y), ((), (2, 2)))
binary_shapes("dot", "function", lambda m, x, y: m.dot(x, y))
binary_shapes("dot", "method", lambda m, x, y: x.dot(y))
binary_shapes("outer", "function", lambda m, x, y: m.outer(x, y))
binary_shapes("outer", "method", lambda m, x, y: x.outer(y))
probe("linear", "0d-input", lambda m, x, w: m.nn.functional.linear(x, w), ((), (2, 1)))
probe("linear", "0d-bias", lambda m, x, w, b: m.nn.functional.linear(x, w, b), (VECTOR, (2, 3), ()))
probe("linear", "0d-weight", lambda m, x, w: m.nn.functional.linear(x, w), (VECTOR, ()))

# ---- reductions -----------------------------------------------------------------------------

for _name in ("sum", "mean", "prod"):
    _domains = ("nonzero",) if _name == "prod" else None
    probe(_name, "all", lambda m, x, n=_name: getattr(x, n)(), domains=_domains)
    probe(_name, "function-all", lambda m, x, n=_name: getattr(m, n)(x), domains=_domains)
    dims(_name, "method", lambda m, x, d, k, n=_name: getattr(x, n)(d, keepdim=k), keepdim=True, domains=_domains)
    dims(_name, "function", lambda m, x, d, n=_name: getattr(m, n)(x, d), domains=_domains)
for _name in ("sum", "mean"):
    probe(_name, "dims-tuple", lambda m, x, n=_name: getattr(x, n)((0,)))
    probe(_name, "dims-tuple-keepdim", lambda m, x, n=_name: getattr(x, n)((-1,), keepdim=True))
    probe(_name, "dims-repeated", lambda m, x, n=_name: getattr(x, n)((0, -1)))
    probe(_name, "dims-empty", lambda m, x, n=_name: getattr(x, n)(()))
# An empty dim list reduces every axis (PyTorch's reading, for these ops; its var and std read it
# so forward but not backward, whose gradient is then inf: not compared).
for _name in ("sum", "mean"):
    probe(_name, "matrix-dims-empty", lambda m, x, n=_name: getattr(x, n)(()), ((2, 3),))
probe("norm", "matrix-dims-empty", lambda m, x: x.norm(dim=()), ((2, 3),))
for _name in ("var", "std"):
    # One element leaves no degrees of freedom for Bessel's correction: PyTorch gives nan (and
    # warns); correction 0 gives 0.
    probe(_name, "correction0", lambda m, x, n=_name: getattr(x, n)(correction=0))
    probe(_name, "unbiased", lambda m, x, n=_name: getattr(x, n)())
    dims(_name, "correction0", lambda m, x, d, k, n=_name: getattr(x, n)(d, correction=0, keepdim=k), keepdim=True)
    dims(_name, "unbiased", lambda m, x, d, n=_name: getattr(m, n)(x, d))
for _name in ("amax", "amin"):
    probe(_name, "all", lambda m, x, n=_name: getattr(x, n)())
    dims(_name, "method", lambda m, x, d, k, n=_name: getattr(x, n)(d, keepdim=k), keepdim=True)
    dims(_name, "function", lambda m, x, d, n=_name: getattr(m, n)(x, d))
for _name, _fn in (("max", "max"), ("min", "min")):
    probe(_name, "method", lambda m, x, n=_fn: getattr(x, n)())
    probe(_name, "function", lambda m, x, n=_fn: getattr(m, n)(x))
for _name, _fn in (("max_dim", "max"), ("min_dim", "min")):
    dims(_name, "method", lambda m, x, d, k, n=_fn: getattr(x, n)(d, keepdim=k), keepdim=True)
    dims(_name, "function", lambda m, x, d, n=_fn: getattr(m, n)(x, d))
    probe(_name, "values", lambda m, x, n=_fn: getattr(x, n)(0).values)
    probe(_name, "indices", lambda m, x, n=_fn: getattr(x, n)(-1).indices)
for _name in ("argmax", "argmin"):
    probe(_name, "all", lambda m, x, n=_name: getattr(x, n)())
    dims(_name, "method", lambda m, x, d, k, n=_name: getattr(x, n)(d, keepdim=k), keepdim=True)
    dims(_name, "function", lambda m, x, d, n=_name: getattr(m, n)(x, d))
for _name in ("all", "any"):
    probe(_name, "all", lambda m, x, n=_name: getattr(x, n)())
    dims(_name, "method", lambda m, x, d, k, n=_name: getattr(x, n)(d, keepdim=k), keepdim=True)
probe("norm", "all", lambda m, x: x.norm())
probe("norm", "function", lambda m, x: m.norm(x))
for _p in (1, 2, float("inf"), 3):
    probe("norm", f"p{_p}", lambda m, x, p=_p: x.norm(p=p), domains=("nonzero",))
    dims("norm", f"p{_p}", lambda m, x, d, k, p=_p: x.norm(p=p, dim=d, keepdim=k), keepdim=True, domains=("nonzero",))
probe("norm", "zero", lambda m, x: (x * 0).norm())
dims("logsumexp", "method", lambda m, x, d, k: x.logsumexp(d, keepdim=k), keepdim=True)
dims("logsumexp", "function", lambda m, x, d: m.logsumexp(x, d))
probe("logsumexp", "dims-tuple", lambda m, x: x.logsumexp((0,)))
for _name in ("softmax", "log_softmax"):
    dims(_name, "method", lambda m, x, d, n=_name: getattr(x, n)(d))
    dims(_name, "function", lambda m, x, d, n=_name: getattr(m, n)(x, d))
    dims(_name, "nn_functional", lambda m, x, d, n=_name: getattr(m.nn.functional, n)(x, dim=d))
dims("flip", "method", lambda m, x, d: x.flip(d))
dims("flip", "function", lambda m, x, d: m.flip(x, (d,)))
probe("flip", "no-dims", lambda m, x: x.flip(()))
probe("flip", "vec", lambda m, x: x.flip(0), (VECTOR,))  # a copy, as PyTorch's (numpy's flip is a view)
dims("cumsum", "method", lambda m, x, d: x.cumsum(d))
dims("cumsum", "function", lambda m, x, d: m.cumsum(x, d))
dims("cumsum", "keyword", lambda m, x, d: x.cumsum(dim=d))

# ---- shape and indexing -------------------------------------------------------------------

for _shape in ((), (1,), (1, 1), (-1,), (2,)):
    probe("reshape", f"to{_shape}", lambda m, x, s=_shape: x.reshape(s))
    probe("reshape", f"view-to{_shape}", lambda m, x, s=_shape: x.view(s))
probe("reshape", "from-1", lambda m, x: x.reshape(()), ((1,),))
probe("reshape", "from-1x1", lambda m, x: x.view(()), ((1, 1),))
probe("reshape", "function", lambda m, x: m.reshape(x, (1,)))
probe("reshape", "flatten", lambda m, x: x.flatten())
probe("reshape", "view_as", lambda m, x, y: x.view_as(y), ((), (1,)))
probe("unsafe_view", "to1", lambda m, x: ops.unsafe_view(x, shape=(1,)),
      torch_call=lambda m, x: m.ops.aten._unsafe_view(x, [1]))
probe("unsafe_view", "from1", lambda m, x: ops.unsafe_view(x, shape=()), ((1,),),
      torch_call=lambda m, x: m.ops.aten._unsafe_view(x, []))
for _shape in ((), (3,), (2, 3), (-1,)):
    probe("expand", f"to{_shape}", lambda m, x, s=_shape: x.expand(s))
probe("expand", "vec-leading-minus-1", lambda m, x: x.expand(-1, 3), (VECTOR,))
probe("expand", "as", lambda m, x, y: x.expand_as(y), ((), (2, 3)))
probe("expand", "broadcast_to", lambda m, x: m.broadcast_to(x, (3,)))
probe("sum_to_size", "0d-to-0d", lambda m, x: ops.sum_to_size(x, shape=()),
      torch_call=lambda m, x: x.sum_to_size(()))
probe("sum_to_size", "vec-to-0d", lambda m, x: ops.sum_to_size(x, shape=()), (VECTOR,),
      torch_call=lambda m, x: x.sum_to_size(()))
probe("sum_to_size", "0d-to-1", lambda m, x: ops.sum_to_size(x, shape=(1,)),
      torch_call=lambda m, x: x.sum_to_size((1,)))
probe("permute", "empty-tuple", lambda m, x: m.permute(x, ()))
probe("permute", "one-dim", lambda m, x: x.permute(0))
probe("permute", "T", lambda m, x: x.T)
for _dim0, _dim1 in ((0, 0), (0, -1), (-1, -1), (0, 1)):
    probe("transpose", f"{_dim0}-{_dim1}", lambda m, x, a=_dim0, b=_dim1: x.transpose(a, b))
probe("transpose", "function", lambda m, x: m.transpose(x, 0, -1))
probe("transpose", "mT", lambda m, x: x.mT)
probe("transpose", "mT-vec", lambda m, x: x.mT, (VECTOR,))
probe("t", "method", lambda m, x: x.t())
probe("t", "function", lambda m, x: m.t(x))
probe("squeeze", "all", lambda m, x: x.squeeze())
probe("squeeze", "function", lambda m, x: m.squeeze(x))
dims("squeeze", "method", lambda m, x, d: x.squeeze(d))
probe("squeeze", "dims-tuple", lambda m, x: x.squeeze((0,)))
probe("squeeze", "from-1", lambda m, x: x.squeeze(0), ((1,),))
dims("unsqueeze", "method", lambda m, x, d: x.unsqueeze(d))
probe("unsqueeze", "function", lambda m, x: m.unsqueeze(x, 0))
for _reps in ((), (2,), (2, 3), (1,)):
    probe("tile", f"repeat{_reps}", lambda m, x, r=_reps: x.repeat(r))
probe("tile", "repeat-varargs", lambda m, x: x.repeat(2, 1))
for _label, _index in (("ellipsis", ...), ("empty-tuple", ()), ("none", None), ("ellipsis-none", (..., None)),
                       ("none-ellipsis", (None, ...)), ("zero", 0), ("slice", slice(None)), ("list", [0])):
    probe("getitem", _label, lambda m, x, i=_index: x[i])
probe("getitem", "vec-select", lambda m, x: x[1], (VECTOR,))
probe("getitem", "vec-0d-index", lambda m, x: x[m.tensor(1)], (VECTOR,))
probe("getitem", "vec-select-ellipsis", lambda m, x: x[..., -1], (VECTOR,))
probe("getitem", "select", lambda m, x: x.select(0, 0))
probe("getitem", "vec-select-method", lambda m, x: x.select(0, 2), (VECTOR,))
probe("getitem", "unbind", lambda m, x: m.stack(x.unbind(0)), (VECTOR,))
probe("getitem", "item-and-back", lambda m, x: x[()] * 2)
probe("getitem", "narrow", lambda m, x: x.narrow(0, 0, 1))
probe("getitem", "unbind-0d", lambda m, x: x.unbind(0))
probe("getitem", "split", lambda m, x: x.split(1))
probe("getitem", "chunk", lambda m, x: x.chunk(1))
probe("reshape", "unflatten", lambda m, x: x.unflatten(0, (1,)))
probe("reshape", "flatten-0-0", lambda m, x: x.flatten(0, 0))


def _scatter_into_zeros(m, y, shape, index):
    """PyTorch's counterpart of getitem_adjoint: zeros with y written at index."""
    out = m.zeros(shape, dtype=y.dtype)
    out[index] = y
    return out


for _shape, _index in (((), (Ellipsis,)), ((3,), (Ellipsis, 1)), ((2, 3), (Ellipsis, 1, 2))):
    probe("getitem_adjoint", f"into{_shape}", lambda m, y, s=_shape, i=_index: ops.getitem_adjoint(y, shape=s, index=i),
          torch_call=lambda m, y, s=_shape, i=_index: _scatter_into_zeros(m, y, s, i))


def _setitem(x, index, values):
    out = x.clone()
    out[index] = values
    return out


for _label, _index, _shapes in (("ellipsis", ..., ((), ())), ("empty-tuple", (), ((), ())),
                                ("vec-select", 1, (VECTOR, ())), ("vec-ellipsis", ..., (VECTOR, ())),
                                ("0d-from-vec", ..., ((), VECTOR)), ("0d-from-1", ..., ((), (1,))),
                                ("none", None, ((), ()))):
    probe("index_put", _label, lambda m, x, v, i=_index: _setitem(x, i, v), _shapes)
probe("index_put", "number", lambda m, x: _setitem(x, ..., 2.0))
probe("take_flat", "0d-position", lambda m, x: ops.take_flat(x, positions=np.array(4), shape=(2, 3)), ((2, 3),),
      torch_call=lambda m, x: x.reshape(-1)[4])
probe("take_flat", "0d-base", lambda m, x: ops.take_flat(x, positions=np.array(0), shape=()),
      torch_call=lambda m, x: x.reshape(-1)[0])


def _write_through_view(m, x, v, index):
    """An in-place op on a view of a clone (PyTorch's CopySlices; our copy_slices)."""
    out = x.clone()
    out[index].mul_(v)
    return out


probe("copy_slices", "0d-view-of-vec", lambda m, x, v: _write_through_view(m, x, v, 1), (VECTOR, ()))
probe("copy_slices", "0d-view-of-0d", lambda m, x, v: _write_through_view(m, x, v, ...), ((), ()))
probe("copy_slices", "0d-reshape-view", lambda m, x, v: _write_through_view(m, x.reshape(1), v, 0), ((), ()))
for _name, _fn in (("cat", "cat"), ("stack", "stack")):
    dims(_name, "0d-0d", lambda m, x, d, f=_fn: getattr(m, f)([x, x * 2], d))
    probe(_name, "vec-0d", lambda m, x, y, f=_fn: getattr(m, f)([x, y]), (VECTOR, ()))
probe("cat", "0d-with-1", lambda m, x, y: m.cat([y, x]), ((), (1,)))

# ---- copies, dtypes, devices ------------------------------------------------------------------

probe("clone", "method", lambda m, x: x.clone())
probe("clone", "function", lambda m, x: m.clone(x))
probe("to_dtype", "float", lambda m, x: x.float(), float32=True)
probe("to_dtype", "to-float32", lambda m, x: x.to(m.float32), float32=True)
probe("to_dtype", "to-int", lambda m, x: x.long())
probe("to_device", "cpu", lambda m, x: x.to("cpu") * 1)
for _label, _shapes in (("0d-0d", ((), ())), ("vec-0d", (VECTOR, ())), ("0d-vec", ((), VECTOR))):
    probe("copy_from", _label, lambda m, x, src: x.clone().copy_(src), _shapes)
probe("fill", "number", lambda m, x: x.clone().fill_(2.0))
probe("fill", "0d-tensor", lambda m, x, v: x.clone().fill_(v), ((), ()))
probe("fill", "vec-0d-tensor", lambda m, x, v: x.clone().fill_(v), (VECTOR, ()))
probe("fill", "vec-tensor", lambda m, x, v: x.clone().fill_(v), ((), VECTOR))
probe("fill", "zero", lambda m, x: x.clone().zero_())


PROBES = [p for name in ops.table for p in SWEEP.get(name, ())]
