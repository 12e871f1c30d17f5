"""In-place ops (``add_``, ``sin_``, ``x[i] = v``) with PyTorch's version-counter rules.

An in-place op is the table's out-of-place op whose result is written back
into the tensor's own memory (so views and aliases see it) and whose version
counter is bumped. Rules:

- on a leaf that requires grad, with grad mode on: RuntimeError at once;
- any backward node that saved this tensor sees the new version and raises
  at backward time, naming itself (see ``backward._check_versions``);
- when the op is recorded, the tensor takes the new node as its ``grad_fn``
  and the node sees a snapshot of the old value (copied only if the op's vjp
  needs it).
"""

from __future__ import annotations

import weakref

from engine.autograd import grad_mode
from engine.autograd.function import apply
from engine.tensor import Tensor

LEAF_MESSAGE = "a leaf Variable that requires grad is being used in an in-place operation."
VIEW_OF_LEAF_MESSAGE = (
    "a view of a leaf Variable that requires grad is being used in an in-place operation."
)


def _write(tensor, result_array):
    target = tensor._data
    if result_array.shape != target.shape:
        raise RuntimeError(
            f"output with shape {list(target.shape)} doesn't match the broadcast shape "
            f"{list(result_array.shape)}"
        )
    if not target.flags.writeable:
        raise RuntimeError(
            "unsupported operation: the tensor is a broadcast (expanded) view; more than one element "
            "refers to the same memory location. Call .clone() before writing to it."
        )
    target[...] = result_array
    tensor._version_counter[0] += 1


def apply_inplace(tensor, op, args, params):
    recording = grad_mode.is_grad_enabled()
    if recording and tensor._requires_grad and tensor.grad_fn is None:
        raise RuntimeError(LEAF_MESSAGE)
    base = tensor._base
    if recording and base is not None and base._requires_grad and base.grad_fn is None:
        raise RuntimeError(VIEW_OF_LEAF_MESSAGE)

    others_require = any(isinstance(a, Tensor) and a._requires_grad for a in args)
    if not recording or not (tensor._requires_grad or others_require):
        with grad_mode.no_grad():
            result = apply(op, (tensor, *args), params)
        _write(tensor, result._data.astype(tensor._data.dtype, copy=False))
        if result._tangents is not None or tensor._tangents is not None:
            tensor._tangents = result._tangents  # forward AD: the tangent follows the new value
        return tensor

    if base is not None:
        return _write_through_view(tensor, base, op, args, params)
    result = apply(op, (_snapshot(tensor, op), *args), params)
    _write(tensor, result._data.astype(tensor._data.dtype, copy=False))
    _take_history(tensor, result)
    return tensor


def _snapshot(tensor, op):
    """The tensor before the write, taking its place in the graph: the new node must see the
    old value (copied only when the op's vjp needs it)."""
    old = Tensor._make(tensor._data.copy() if 0 in op.saved_inputs else tensor._data)
    old.grad_fn = tensor.grad_fn
    old._requires_grad = tensor._requires_grad
    old._tangents = tensor._tangents
    return old


def _take_history(tensor, result):
    if result._tangents is not None or tensor._tangents is not None:
        tensor._tangents = result._tangents  # forward AD: the tangent follows the new value
    tensor.grad_fn = result.grad_fn
    tensor._requires_grad = result._requires_grad
    if tensor.grad_fn is not None and tensor._retains_grad:
        tensor.grad_fn.retained = weakref.ref(tensor)


def _write_through_view(view, base, op, args, params):
    """An in-place op on a view while recording (``y[0] += 1``, ``y[:, 1].mul_(2)``).

    As PyTorch's CopySlices does, the base's history gains the write: the new
    values are computed out of place, written into the base by the view op's
    ``write_back`` (for indexing, ``index_put``), and the view is read again
    from the updated base. Views of views are not traced back to their base.
    """
    origin = view._view_origin
    if origin is None or origin[0].write_back is None:
        raise RuntimeError(
            f"in-place {op.name} on this view of a tensor that requires grad is not supported "
            "(only a direct index of the base can be written through); write the result out of "
            "place (y = x.clone(); y[...] = ...) instead"
        )
    view_op, view_params = origin
    values = apply(op, (_snapshot(view, op), *args), params)
    write_op, write_args, write_params = view_op.write_back(values, **view_params)
    apply_inplace(base, write_op, write_args, write_params)
    _take_history(view, apply(view_op, (base,), view_params))
    return view
