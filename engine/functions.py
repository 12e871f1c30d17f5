"""``engine.<fn>``: PyTorch's free functions over the table (``engine.sin(x)``, ``engine.cat``).

Each table entry declares its functions (``function=``). Those written here
translate PyTorch's signature where the Tensor method cannot (a number as the
first operand, a list of tensors, parameters with no method); the rest are
generated at the end: a plain call of an op without parameters
(``engine.sin``, ``engine.mul``), or else the Tensor method of the same name
with ``input`` first (``engine.sum(x, 0)`` is ``x.sum(0)``; the in-place
``engine.sin_``, which the tutorial calls, is ``x.sin_()``).
"""

from __future__ import annotations

from inspect import signature as _signature

from engine import ops
from engine.autograd.function import apply
from engine.tensor import Tensor, _dims_arg, _tensor_arg

_NO_PARAMS: dict = {}


def add(input, other, *, alpha=1):
    return input.add(other, alpha=alpha) if isinstance(input, Tensor) else _tensor_arg(other, "add").__radd__(input)


def sub(input, other, *, alpha=1):
    return input.sub(other, alpha=alpha) if isinstance(input, Tensor) else _tensor_arg(other, "sub").__rsub__(input)


def div(input, other, *, rounding_mode=None):
    if rounding_mode is not None:
        return apply(ops.div_rounded, (input, other), {"rounding_mode": rounding_mode})
    return apply(ops.div, (input, other), {})


divide, true_divide, subtract = div, div, sub


def pow(input, exponent):
    if isinstance(input, Tensor):
        return input.pow(exponent)
    # A number base: PyTorch's pow.Scalar (PowBackward2).
    return _tensor_arg(exponent, "pow", "exponent").__rpow__(input)


def matmul(input, other):
    return input.matmul(other) if isinstance(input, Tensor) else _tensor_arg(other, "matmul").__rmatmul__(input)


def mm(input, mat2):
    """matrix product of two matrices (one MmBackward0 node)"""
    return _tensor_arg(input, "mm", "input").mm(mat2)


def bmm(input, mat2):
    """matrix products of two batches of matrices, both 3-D (one BmmBackward0 node)"""
    return _tensor_arg(input, "bmm", "input").bmm(mat2)


def outer(input, vec2):
    return apply(ops.outer, (input, vec2), {})


def where(condition, input, other):
    return apply(ops.where, (condition, input, other), {})


def cat(tensors, dim=0):
    return apply(ops.cat, (list(tensors),), {"dim": dim})


concat = concatenate = cat


def stack(tensors, dim=0):
    return apply(ops.stack, (list(tensors),), {"dim": dim})


def flip(input, dims):
    return apply(ops.flip, (input,), {"dims": _dims_arg(dims)})


def gelu(input, approximate="none"):
    return apply(ops.gelu, (input,), {"approximate": approximate})


def softplus(input, beta=1.0, threshold=20.0):
    return apply(ops.softplus, (input,), {"beta": float(beta), "threshold": float(threshold)})


# ---- built from other functions (no table entry of their own) -------------------------


def flatten(input, start_dim=0, end_dim=-1):
    return _tensor_arg(input, "flatten", "input").flatten(start_dim, end_dim)


def broadcast_to(input, size):
    return _tensor_arg(input, "broadcast_to", "input").expand(size)


def square(input):
    return _tensor_arg(input, "square", "input").pow(2)


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    return _tensor_arg(input, "allclose", "input").allclose(other, rtol, atol, equal_nan)


def equal(input, other) -> bool:
    return _tensor_arg(input, "equal", "input").equal(other)


def detach(input):
    return _tensor_arg(input, "detach", "input").detach()


def numel(input) -> int:
    return _tensor_arg(input, "numel", "input").numel()


def is_tensor(value) -> bool:
    return isinstance(value, Tensor)


# ---- functions generated from the table's declarations ----------------------------------


def _op_function(op, name):
    """``engine.<name>``: ``op`` on the operands (numbers allowed, as operators allow them)."""
    if op.arity == 1:
        def function(input):
            return apply(op, (input,), _NO_PARAMS)
    else:
        def function(input, other):
            return apply(op, (input, other), _NO_PARAMS)
    return function


def _method_function(name):
    """``engine.<name>(input, ...)``: ``input.<name>(...)``, with the method's signature."""
    method = getattr(Tensor, name)

    def function(input, *args, **kwargs):
        if not isinstance(input, Tensor):  # checked here, not by a call: this sits on the hot path
            _tensor_arg(input, name, "input")
        return method(input, *args, **kwargs)

    signature = _signature(method)
    self_param, *rest = signature.parameters.values()
    function.__signature__ = signature.replace(parameters=[self_param.replace(name="input"), *rest])
    return function


_DECLARED = ops.table.variants("functions")


def _generated_function(name, op):
    if op is not None and name not in op.inplace:
        function = _op_function(op, name)
    elif hasattr(Tensor, name):
        function = _method_function(name)
    else:
        return None  # neither: written by hand above
    function.__name__, function.__qualname__, function.__doc__ = name, name, _DECLARED[name][0].doc
    return function


globals().update(ops.table.missing_variants("functions", globals(), _generated_function, "engine/functions.py"))
