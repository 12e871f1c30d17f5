"""``engine.nn.functional``: layers, activations, dropout and losses as functions.

Layers run their table op (``convolution``, ``max_pool2d``, ``batch_norm``...)
after translating PyTorch's arguments; losses are composed from table ops
(``linear``, ``log_softmax``, ``softplus``, ``where``, indexing,
``sum``/``mean``...), so everything is differentiable to any order with
``create_graph=True``. Reductions follow PyTorch: ``reduction`` is "mean",
"sum" or "none".
"""

from __future__ import annotations

import functools

from engine import backend, ops
from engine.autograd.function import apply
from engine.autograd.grad_mode import is_grad_enabled, no_grad
from engine.autograd.inplace import apply_inplace
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



def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False):
    params = {"negative_slope": float(negative_slope)}
    return apply_inplace(input, ops.leaky_relu, (), params) if inplace else apply(ops.leaky_relu, (input,), params)


def elu(input, alpha: float = 1.0, inplace: bool = False):
    params = {"alpha": float(alpha), "scale": 1.0, "input_scale": 1.0}
    return apply_inplace(input, ops.elu, (), params) if inplace else apply(ops.elu, (input,), params)


def silu(input, inplace: bool = False):
    return apply_inplace(input, ops.silu, (), {}) if inplace else apply(ops.silu, (input,), {})


# ---- convolution and pooling ------------------------------------------------------


def _convolve(d, input, weight, bias, stride, padding, dilation, groups):
    """conv1d/conv2d: the ``convolution`` op; an unbatched input (C, *S) gets a batch axis of one."""
    if input.dim() not in (d + 1, d + 2):
        raise RuntimeError(
            f"Expected {d + 1}D (unbatched) or {d + 2}D (batched) input to conv{d}d, but got input of size: "
            f"{list(input.shape)}"
        )
    if weight.dim() != d + 2:
        raise RuntimeError(f"weight of conv{d}d must be {d + 2}-D (out, in / groups, *kernel), got "
                           f"{list(weight.shape)}")
    unbatched = input.dim() == d + 1
    x = input.unsqueeze(0) if unbatched else input
    params = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if isinstance(stride, int):  # tells the op how many spatial axes there are
        params["stride"] = (stride,) * d
    out = apply(ops.convolution, (x, weight, bias), params)
    return out.squeeze(0) if unbatched else out


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-d convolution of input (N, C, L) with weight (O, C / groups, K)."""
    return _convolve(1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-d convolution of input (N, C, H, W) with weight (O, C / groups, KH, KW)."""
    return _convolve(2, input, weight, bias, stride, padding, dilation, groups)


def _check_pooled_input(name, input):
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{name}: Expected 3D or 4D (batch mode) tensor for input, but got: {list(input.shape)}")


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """The maximum of each window (and, with return_indices, its flat index in the input plane)."""
    _check_pooled_input("max_pool2d", input)
    values, indices = apply(ops.max_pool2d, (input,), {
        "kernel_size": kernel_size, "stride": stride, "padding": padding, "dilation": dilation,
        "ceil_mode": bool(ceil_mode),
    })
    return (values, indices) if return_indices else values


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    _check_pooled_input("avg_pool2d", input)
    return apply(ops.avg_pool2d, (input,), {
        "kernel_size": kernel_size, "stride": stride, "padding": padding, "ceil_mode": bool(ceil_mode),
        "count_include_pad": bool(count_include_pad), "divisor_override": divisor_override,
    })


def adaptive_avg_pool2d(input, output_size):
    """Mean over output_size windows tiling the input; (1, 1) is a mean, as PyTorch runs it."""
    _check_pooled_input("adaptive_avg_pool2d", input)
    size = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if size == (1, 1):
        return input.mean(dim=(-2, -1), keepdim=True)
    return apply(ops.adaptive_avg_pool2d, (input,), {"output_size": size})


# ---- normalization and embedding ------------------------------------------------------


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5):
    """Standardize per channel (axis 1): with batch statistics when training (and blend them into
    running_mean / running_var by momentum, the variance unbiased), else with the running ones."""
    if input.dim() < 2:
        raise ValueError(f"expected 2D or more input (N, C, ...), got {input.dim()}D input")
    if training or running_mean is None or running_var is None:
        if training:
            per_channel = input.numel() // input.shape[1]
            if per_channel <= 1:
                raise ValueError(
                    f"Expected more than 1 value per channel when training, got input size {input.shape}"
                )
        out = apply(ops.batch_norm, (input, weight, bias), {"eps": float(eps)})
        if training and running_mean is not None and running_var is not None:
            _update_running_stats(input, running_mean, running_var, momentum)
        return out
    return apply(ops.batch_norm_eval, (input, weight, bias, running_mean, running_var), {"eps": float(eps)})


def _update_running_stats(input, running_mean, running_var, momentum):
    dims = (0, *range(2, input.dim()))
    with no_grad():
        sample = input.detach()
        batch_mean = sample.mean(dim=dims)
        batch_var = sample.var(dim=dims, correction=1)  # unbiased, as PyTorch keeps it
        running_mean.mul_(1 - momentum).add_(batch_mean.to(running_mean.dtype) * momentum)
        running_var.mul_(1 - momentum).add_(batch_var.to(running_var.dtype) * momentum)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return apply(ops.layer_norm, (input, weight, bias), {"normalized_shape": shape, "eps": float(eps)})


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False):
    """The rows of weight at the integer indices ``input``; the padding_idx row gets no gradient."""
    if batching.any_batched(input, weight):  # under vmap: the indices are a param, read per sample
        return batching.per_sample(embedding, input, weight, padding_idx=padding_idx, max_norm=max_norm,
                                   norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)
    if scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: scale_grad_by_freq and sparse gradients are not supported; "
                                  "leave them False (dense gradients)")
    if weight.dim() != 2:
        raise RuntimeError(f"'weight' must be 2-D, got a weight of size {list(weight.shape)}")
    indices = input._data if isinstance(input, Tensor) else backend.namespace_of(weight._data).asarray(input)
    if max_norm is not None:
        _renormalize_rows(weight, indices, float(max_norm), float(norm_type))
    return apply(ops.embedding, (weight,), {"indices": indices, "padding_idx": padding_idx})


def _renormalize_rows(weight, indices, max_norm, norm_type):
    """PyTorch's max_norm: the rows read whose norm exceeds max_norm are scaled down to it, in place."""
    with no_grad():
        xp = backend.namespace_of(weight._data)
        rows = xp.unique(indices.reshape(-1))
        picked = weight._data[rows]
        norms = (xp.abs(picked) ** norm_type).sum(axis=-1, keepdims=True) ** (1.0 / norm_type)
        scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0).astype(picked.dtype)
        weight._data[rows] = picked * scale
        weight._version_counter[0] += 1

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


def _expanded(*tensors):
    """The loss inputs broadcast to one shape (the fused loss ops take them elementwise)."""
    present = [t for t in tensors if t is not None]
    shape = backend.broadcast_shapes(*(tuple(t.shape) for t in present))
    return [t if t is None or tuple(t.shape) == shape else t.expand(*shape) for t in tensors]


def mse_loss(input, target, reduction: str = "mean"):
    """(input - target)^2, reduced (one op, MseLossBackward0)."""
    _check_reduction(reduction)
    return apply(ops.mse_loss, tuple(_expanded(input, target)), {"reduction": reduction})


def l1_loss(input, target, reduction: str = "mean"):
    """|input - target|, reduced (composed, as PyTorch composes it)."""
    _check_reduction(reduction)
    return _reduce((input - target).abs(), reduction)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0):
    """0.5 d^2 where |d| < delta, else delta (|d| - delta / 2), with d = input - target."""
    _check_reduction(reduction)
    if delta <= 0:
        raise ValueError(f"huber_loss does not support non-positive values for delta, got {delta}")
    return apply(ops.huber_loss, tuple(_expanded(input, target)), {"reduction": reduction, "delta": float(delta)})


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0):
    """Huber loss divided by beta (PyTorch's smooth L1); L1 for beta = 0."""
    _check_reduction(reduction)
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    if beta == 0.0:
        return l1_loss(input, target, reduction)
    return apply(ops.smooth_l1_loss, tuple(_expanded(input, target)), {"reduction": reduction, "beta": float(beta)})


def _refuse_gradient(function, **arguments):
    """PyTorch's loss weights are constants: one that requires grad is refused, as PyTorch does."""
    for name, value in arguments.items():
        if value is not None and value.requires_grad and is_grad_enabled():
            raise RuntimeError(f"The function '{function}' is not differentiable with respect to argument '{name}'. "
                               "This input cannot have requires_grad True.")


def _ones_like(input):
    return Tensor._make(backend.namespace_of(input._data).ones((), dtype=input._data.dtype))


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    """-(t log x + (1 - t) log(1 - x)), each log clamped at -100 as PyTorch does."""
    _check_reduction(reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(
            f"Using a target size ({tuple(target.shape)}) that is different to the input size "
            f"({tuple(input.shape)}) is deprecated. Please ensure they have the same size."
        )
    _refuse_gradient("binary_cross_entropy", weight=weight)
    args = _expanded(input, target, _ones_like(input) if weight is None else weight)
    return apply(ops.bce_loss, tuple(args), {"reduction": reduction})


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean", pos_weight=None):
    """BCE of sigmoid(input), computed stably: (1 - t) x + (1 + (p - 1) t) softplus(-x)."""
    _check_reduction(reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(
            f"Target size ({tuple(target.shape)}) must be the same as input size ({tuple(input.shape)})"
        )
    _refuse_gradient("binary_cross_entropy_with_logits", weight=weight, pos_weight=pos_weight)
    one = _ones_like(input)
    args = _expanded(input, target, one if weight is None else weight, one if pos_weight is None else pos_weight)
    return apply(ops.bce_with_logits_loss, tuple(args), {"reduction": reduction})


def _class_dim(input) -> int:
    return 0 if input.dim() == 1 else 1


@_on_input_device
def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    """-input[n, target[n]] (times the class weight), averaged over the weights for "mean"."""
    _check_reduction(reduction)
    if batching.any_batched(input, target, weight):  # under vmap: it indexes with target's array
        return batching.per_sample(nll_loss, input, target, weight, ignore_index=ignore_index, reduction=reduction)
    target_array = target._data if isinstance(target, Tensor) else backend.numpy.asarray(target)
    weight_array = None if weight is None else weight._data
    return apply(ops.nll_loss, (input,), {
        "target": target_array, "weight": weight_array, "ignore_index": int(ignore_index), "reduction": reduction,
    })


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
