"""``engine.nn.functional``: activations, dropout and losses as functions.

Everything here is composed from table ops (``linear``, ``log_softmax``,
``softplus``, ``where``, indexing, ``sum``/``mean``...), so every loss is
differentiable to any order with ``create_graph=True`` and needs no rules of
its own. Reductions follow PyTorch: ``reduction`` is "mean", "sum" or "none".
"""

from __future__ import annotations

import functools
import math

from engine import backend, ops
from engine.autograd.function import apply
from engine.creation import drawn
from engine.func import batching
from engine.nn.init import current_generator
from engine.tensor import Tensor

# ---- layers and activations -------------------------------------------------


def _on_input_device(fn):
    """For the functions below that make arrays themselves (dropout masks, class indices, target
    masks): run them with ``input``'s CUDA device current (cuda:1...), where cupy allocates."""

    @functools.wraps(fn)
    def run(input, *args, **kwargs):
        return backend.call_on_device_of(input, fn, input, *args, **kwargs)

    return run


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` in one op (grad_fn ``AddmmBackward0``)."""
    return apply(ops.linear, (input, weight, bias), {})


def relu(input, inplace: bool = False):
    return input.relu_() if inplace else apply(ops.relu, (input,), {})


def tanh(input):
    return apply(ops.tanh, (input,), {})


def sigmoid(input):
    return apply(ops.sigmoid, (input,), {})


def gelu(input, approximate: str = "none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate argument must be either none or tanh, got {approximate!r}")
    return apply(ops.gelu, (input,), {"approximate": approximate})


def softplus(input, beta: float = 1.0, threshold: float = 20.0):
    return apply(ops.softplus, (input,), {"beta": float(beta), "threshold": float(threshold)})


def _softmax_dim(input, dim):
    if dim is None:  # PyTorch's legacy implicit choice
        return 0 if input.dim() in (0, 1, 3) else 1
    return int(dim)


def softmax(input, dim=None, dtype=None):
    x = input if dtype is None else input.to(dtype)
    return apply(ops.softmax, (x,), {"dim": _softmax_dim(x, dim)})


def log_softmax(input, dim=None, dtype=None):
    x = input if dtype is None else input.to(dtype)
    return apply(ops.log_softmax, (x,), {"dim": _softmax_dim(x, dim)})


@_on_input_device
def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False, generator=None):
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    draw = drawn("uniform", tuple(input.shape), input.dtype, input.device, current_generator(generator))
    # The mask is made by table ops on the draw (batched where the draw is, under vmap), so
    # engine.compile replays it from a fresh draw.
    keep = (draw >= p).to(input.dtype) * (1.0 / (1.0 - p))
    return input * keep


def flatten(input, start_dim: int = 0, end_dim: int = -1):
    return input.flatten(start_dim, end_dim)


# ---- losses -----------------------------------------------------------------


def _reduce(loss, reduction: str):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction} is not a valid value for reduction")


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")


def mse_loss(input, target, reduction: str = "mean"):
    """(input - target)^2, reduced."""
    _check_reduction(reduction)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction: str = "mean"):
    """|input - target|, reduced."""
    _check_reduction(reduction)
    return _reduce((input - target).abs(), reduction)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0):
    """0.5 d^2 where |d| < delta, else delta (|d| - delta / 2), with d = input - target."""
    _check_reduction(reduction)
    if delta <= 0:
        raise ValueError(f"huber_loss does not support non-positive values for delta, got {delta}")
    diff = input - target
    size = diff.abs()
    quadratic = diff * diff * 0.5
    return _reduce(quadratic.where(size < delta, (size - 0.5 * delta) * delta), reduction)


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0):
    """Huber loss divided by beta (PyTorch's smooth L1)."""
    _check_reduction(reduction)
    if beta == 0.0:
        return l1_loss(input, target, reduction)
    diff = input - target
    size = diff.abs()
    return _reduce((diff * diff * (0.5 / beta)).where(size < beta, size - 0.5 * beta), reduction)


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    """-(t log x + (1 - t) log(1 - x)), each log clamped at -100 as PyTorch does."""
    _check_reduction(reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(
            f"Using a target size ({tuple(target.shape)}) that is different to the input size "
            f"({tuple(input.shape)}) is deprecated. Please ensure they have the same size."
        )
    log_x = input.log().clamp(min=-100.0)
    log_rest = (1 - input).log().clamp(min=-100.0)
    loss = -(target * log_x + (1 - target) * log_rest)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean", pos_weight=None):
    """BCE of sigmoid(input), computed stably: (1 - t) x + (1 + (p - 1) t) softplus(-x)."""
    _check_reduction(reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(
            f"Target size ({tuple(target.shape)}) must be the same as input size ({tuple(input.shape)})"
        )
    # threshold=inf: softplus through logaddexp everywhere, exact for large |x| too.
    log_one_plus = apply(ops.softplus, (-input,), {"beta": 1.0, "threshold": math.inf})
    if pos_weight is not None:
        log_one_plus = log_one_plus * ((pos_weight - 1) * target + 1)
    loss = (1 - target) * input + log_one_plus
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def _class_dim(input) -> int:
    return 0 if input.dim() == 1 else 1


def _pick_classes(logp, target_array):
    """``logp[n, target[n], d...]`` for every position of target (class axis 0 or 1)."""
    xp = backend.namespace_of(target_array)
    if logp.dim() == 1:
        return logp[(target_array,)]
    shape = target_array.shape
    # One broadcastable arange per target axis (numpy's indices(sparse=True), which cupy lacks).
    grid = [xp.arange(n).reshape((1,) * i + (n,) + (1,) * (len(shape) - i - 1)) for i, n in enumerate(shape)]
    return logp[(grid[0], target_array, *grid[1:])]


@_on_input_device
def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    """-input[n, target[n]] (times the class weight), averaged over the weights for "mean"."""
    _check_reduction(reduction)
    if batching.any_batched(input, target, weight):  # under vmap: it indexes with target's array
        return batching.per_sample(nll_loss, input, target, weight, ignore_index=ignore_index, reduction=reduction)
    target_array = target._data if isinstance(target, Tensor) else backend.numpy.asarray(target)
    if target_array.dtype.kind not in "iu":
        raise RuntimeError(f"expected scalar type Long but found {backend.dtype_of(target_array)}")
    expected = tuple(input.shape[:1]) + tuple(input.shape[2:]) if input.dim() > 1 else ()
    if tuple(target_array.shape) != expected:
        raise ValueError(
            f"Expected target of shape {expected} for input of shape {tuple(input.shape)}, "
            f"got {tuple(target_array.shape)}"
        )
    ignored = target_array == ignore_index
    any_ignored = bool(ignored.any())
    safe = target_array.copy() if any_ignored else target_array
    if any_ignored:
        safe[ignored] = 0
    picked = _pick_classes(input, safe)
    if weight is None and not any_ignored:
        return _reduce(-picked, reduction)
    weights = weight._data[safe] if weight is not None else (safe * 0 + 1).astype(input._data.dtype)
    weights = (weights * ~ignored).astype(input._data.dtype)
    loss = -picked * Tensor._make(weights)
    if reduction == "mean":
        return loss.sum() / Tensor._make(weights.sum(keepdims=True).reshape(()))  # a 0-d array, not a scalar
    return _reduce(loss, reduction)


@_on_input_device
def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0):
    """log_softmax over the class axis, then NLL (class indices) or -sum(p log q) (probabilities)."""
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    class_dim = _class_dim(input)
    classes = input.shape[class_dim]
    logp = log_softmax(input, dim=class_dim)
    weight_shape = (classes,) + (1,) * (input.dim() - class_dim - 1)
    if isinstance(target, Tensor) and target.is_floating_point():
        if tuple(target.shape) != tuple(input.shape):
            raise ValueError(
                f"Expected target of shape {tuple(input.shape)} (class probabilities) for input of "
                f"shape {tuple(input.shape)}, got {tuple(target.shape)}"
            )
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / classes
        terms = logp * target
        if weight is not None:
            terms = terms * weight.reshape(weight_shape)
        loss = -terms.sum(class_dim)
        if reduction == "mean":
            return loss.sum() / (input.numel() // classes) if input.dim() > 1 else loss
        return _reduce(loss, reduction)
    loss = nll_loss(logp, target, weight, ignore_index, reduction)
    if label_smoothing == 0:
        return loss
    target_array = target._data if isinstance(target, Tensor) else backend.numpy.asarray(target)
    kept = target_array != ignore_index
    terms = logp if weight is None else logp * weight.reshape(weight_shape)
    smooth = -terms.sum(class_dim) * Tensor._make(kept.astype(input._data.dtype))
    if reduction == "mean":
        if weight is not None:
            denominator = weight._data[target_array[kept]].sum()
        else:
            denominator = kept.sum()
        smooth = smooth.sum() / float(denominator)
    else:
        smooth = _reduce(smooth, reduction)
    return loss * (1 - label_smoothing) + smooth * (label_smoothing / classes)
