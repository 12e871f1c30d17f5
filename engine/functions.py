"""``engine.<fn>``: PyTorch's free functions over the table (``engine.sin(x)``, ``engine.cat``).

Each is a thin translation of PyTorch's signature into one table op, like the
Tensor methods; unary functions and their in-place twins (``engine.sin_``,
which the tutorial calls) are generated from ``ops.UNARY_METHODS``.
"""

from __future__ import annotations

from engine import ops
from engine.autograd.function import apply
from engine.tensor import Tensor, _dims_arg


def _tensor(value):
    return value if isinstance(value, Tensor) else None


def add(input, other, *, alpha=1):
    return input.add(other, alpha=alpha) if isinstance(input, Tensor) else other.__radd__(input)


def sub(input, other, *, alpha=1):
    return input.sub(other, alpha=alpha) if isinstance(input, Tensor) else other.__rsub__(input)


def mul(input, other):
    return apply(ops.mul, (input, other), {})


def div(input, other, *, rounding_mode=None):
    if rounding_mode is not None:
        return apply(ops.div_rounded, (input, other), {"rounding_mode": rounding_mode})
    return apply(ops.div, (input, other), {})


multiply, divide, true_divide, subtract = mul, div, div, sub


def pow(input, exponent):
    if isinstance(input, Tensor):
        return input.pow(exponent)
    return exponent.__rpow__(input)  # a number base: PyTorch's pow.Scalar (PowBackward2)


def matmul(input, other):
    return input.matmul(other) if isinstance(input, Tensor) else other.__rmatmul__(input)


def mm(input, mat2):
    """matrix product of two matrices (one MmBackward0 node)"""
    return input.mm(mat2)


def bmm(input, mat2):
    """matrix products of two batches of matrices, both 3-D (one BmmBackward0 node)"""
    return input.bmm(mat2)


def dot(input, other):
    return apply(ops.dot, (input, other), {})


def outer(input, vec2):
    return apply(ops.outer, (input, vec2), {})


def maximum(input, other):
    return apply(ops.maximum, (input, other), {})


def minimum(input, other):
    return apply(ops.minimum, (input, other), {})


def where(condition, input, other):
    return apply(ops.where, (condition, input, other), {})


def clamp(input, min=None, max=None):
    return input.clamp(min, max)


clip = clamp


def cat(tensors, dim=0):
    return apply(ops.cat, (list(tensors),), {"dim": dim})


concat = concatenate = cat


def stack(tensors, dim=0):
    return apply(ops.stack, (list(tensors),), {"dim": dim})


def sum(input, dim=None, keepdim=False, *, dtype=None):
    return input.sum(dim, keepdim, dtype=dtype)


def mean(input, dim=None, keepdim=False, *, dtype=None):
    return input.mean(dim, keepdim, dtype=dtype)


def prod(input, dim=None, keepdim=False):
    return input.prod(dim, keepdim)


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return input.var(dim, unbiased, keepdim, correction=correction)


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return input.std(dim, unbiased, keepdim, correction=correction)


def max(input, dim=None, keepdim=False):
    return input.max(dim, keepdim)


def min(input, dim=None, keepdim=False):
    return input.min(dim, keepdim)


def amax(input, dim=(), keepdim=False):
    return input.amax(dim, keepdim)


def amin(input, dim=(), keepdim=False):
    return input.amin(dim, keepdim)


def argmax(input, dim=None, keepdim=False):
    return input.argmax(dim, keepdim)


def argmin(input, dim=None, keepdim=False):
    return input.argmin(dim, keepdim)


def norm(input, p="fro", dim=None, keepdim=False):
    return input.norm(p, dim, keepdim)


def logsumexp(input, dim, keepdim=False):
    return input.logsumexp(dim, keepdim)


def softmax(input, dim):
    return input.softmax(dim)


def log_softmax(input, dim):
    return input.log_softmax(dim)


def cumsum(input, dim):
    return input.cumsum(dim)


def flip(input, dims):
    return apply(ops.flip, (input,), {"dims": _dims_arg(dims)})


def reshape(input, shape):
    return input.reshape(shape)


def flatten(input, start_dim=0, end_dim=-1):
    return input.flatten(start_dim, end_dim)


def transpose(input, dim0, dim1):
    return input.transpose(dim0, dim1)


def permute(input, dims):
    return input.permute(dims)


def squeeze(input, dim=None):
    return input.squeeze(dim)


def unsqueeze(input, dim):
    return input.unsqueeze(dim)


def broadcast_to(input, size):
    return input.expand(size)


def t(input):
    return input.t()


def gelu(input, approximate="none"):
    return apply(ops.gelu, (input,), {"approximate": approximate})


def softplus(input, beta=1.0, threshold=20.0):
    return apply(ops.softplus, (input,), {"beta": float(beta), "threshold": float(threshold)})


def eq(input, other):
    return input == other


def ne(input, other):
    return input != other


def lt(input, other):
    return input < other


def le(input, other):
    return input <= other


def gt(input, other):
    return input > other


def ge(input, other):
    return input >= other


def isnan(input):
    return apply(ops.isnan, (input,), {})


def isfinite(input):
    return apply(ops.isfinite, (input,), {})


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    return input.allclose(other, rtol, atol, equal_nan)


def equal(input, other) -> bool:
    return input.equal(other)


def clone(input):
    return input.clone()


def detach(input):
    return input.detach()


def numel(input) -> int:
    return input.numel()


def is_tensor(value) -> bool:
    return isinstance(value, Tensor)


def _unary(name):
    def function(input):
        return getattr(input, name)()

    def function_(input):
        return getattr(input, name + "_")()

    function.__name__, function_.__name__ = name, name + "_"
    function.__doc__ = ops.table[name].doc
    return function, function_


for _name in ops.UNARY_METHODS:
    globals()[_name], globals()[_name + "_"] = _unary(_name)



def square(input):
    return input.pow(2)
