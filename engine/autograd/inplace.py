"""In-place ops (``add_``, ``sin_``, ``x[i] = v``) with PyTorch's version-counter rules.

An in-place op is the table's out-of-place op whose result is written back
into the tensor's own memory (so views and aliases see it) and whose version
counter is bumped. Rules:

- on a leaf that requires grad, with grad mode on: RuntimeError at once;
- any backward node that saved this tensor sees the new version and raises
  at backward time, naming itself (see ``backward._check_versions``);
- when the op is recorded, the tensor takes the new node as its ``grad_fn``
  and the node sees a snapshot of the old value (copied only if the op's vjp
  needs it);
- on a view (of any depth: indexing, reshape, transpose, squeeze...), the
  write lands in the base, whose history gains a CopySlices node; other views
  of that base read themselves again from it when next used (see
  ``refresh_view``), as PyTorch regenerates their ``grad_fn``.
"""

from __future__ import annotations

import weakref

from engine import backend, ops
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
    """Run ``op`` on ``(tensor, *args)`` and write the result into ``tensor``."""
    if type(tensor._data) is not backend.ndarray:  # a device tensor: written on its device (cuda:1...)
        with backend.on_device(tensor._data):
            return _apply_inplace(tensor, op, args, params)
    return _apply_inplace(tensor, op, args, params)


def _apply_inplace(tensor, op, args, params):
    recording = grad_mode.is_grad_enabled()
    base = tensor._base
    if recording and base is not None and tensor._view_origin[1] != tensor._version_counter[0]:
        refresh_view(tensor)  # the base changed since the view's history was recorded
    if recording and tensor._requires_grad and tensor.grad_fn is None:
        raise RuntimeError(LEAF_MESSAGE)
    if recording and base is not None and base._requires_grad and base.grad_fn is None:
        raise RuntimeError(VIEW_OF_LEAF_MESSAGE)

    others_require = any(isinstance(a, Tensor) and a._requires_grad for a in args)
    if not recording or not (tensor._requires_grad or others_require):
        with grad_mode.no_grad():
            result = apply(op, (tensor, *args), params)
        _write(tensor, result._data.astype(tensor._data.dtype, copy=False))
        if result._tangents is not None or tensor._tangents is not None:
            tensor._tangents = result._tangents  # forward AD: the tangent follows the new value
            if base is not None:
                _write_tangent_through(tensor, base, result)
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
    old._output_nr = tensor._output_nr
    old._requires_grad = tensor._requires_grad
    old._tangents = tensor._tangents
    return old


def _take_history(tensor, result):
    if result._tangents is not None or tensor._tangents is not None:
        tensor._tangents = result._tangents  # forward AD: the tangent follows the new value
    tensor.grad_fn = result.grad_fn
    tensor._output_nr = 0
    tensor._requires_grad = result._requires_grad
    if tensor.grad_fn is not None and tensor._retains_grad:
        tensor.grad_fn.retained = weakref.ref(tensor)


def _write_through_view(view, base, op, args, params):
    """An in-place op on a view while recording (``y[0] += 1``, ``y.t().mul_(2)``, ``y[1][0] = v``).

    As PyTorch's CopySlices does, the base's history gains the write: the new
    values are computed out of place, written into the base at the view's flat
    positions (``copy_slices``, node CopySlices), and the view is read again
    from the updated base (``take_flat``, node AsStridedBackward0).
    """
    if not view._data.flags.writeable:
        raise RuntimeError(
            "unsupported operation: the tensor is a broadcast (expanded) view; more than one element "
            "refers to the same memory location. Call .clone() before writing to it."
        )
    chain = view._view_origin[0]
    values = apply(op, (_snapshot(view, op), *args), params)
    if values._data.shape != view._data.shape:
        raise RuntimeError(
            f"output with shape {list(view._data.shape)} doesn't match the broadcast shape "
            f"{list(values._data.shape)}"
        )
    where = {"positions": _positions(base, chain), "shape": base._data.shape}
    apply_inplace(base, ops.copy_slices, (values,), where)
    _take_history(view, apply(ops.take_flat, (base,), where))
    view._view_origin = (chain, view._version_counter[0])
    return view


def _write_tangent_through(view, base, values):
    """Forward AD, nothing recorded: the base's tangent takes the view's new tangent at the
    view's positions (copy_slices' jvp; the data is in the base already)."""
    where = {"positions": _positions(base, view._view_origin[0]), "shape": base._data.shape}
    with grad_mode.no_grad():
        base._tangents = apply(ops.copy_slices, (base, values), where)._tangents


def refresh_view(view):
    """A view whose base was modified in place after the view's history was recorded (through
    the base or another view) reads itself again from the base, as PyTorch regenerates a view's
    grad_fn (AsStridedBackward0): gradients then flow through the base's new history."""
    chain = view._view_origin[0]
    base = view._base
    if not grad_mode.is_grad_enabled():
        return  # nothing is recorded now; the next recorded use refreshes it
    if base._requires_grad:
        where = {"positions": _positions(base, chain), "shape": base._data.shape}
        _take_history(view, apply(ops.take_flat, (base,), where))
    view._view_origin = (chain, view._version_counter[0])


def _positions(base, chain):
    """The flat positions in ``base`` of the view made by ``chain``: the view ops replayed on
    the numbers 0, 1, ... laid out in the base's shape."""
    data = base._data
    grid = backend.namespace_of(data).arange(data.size).reshape(data.shape)
    for view_op, view_params in chain:
        grid = view_op.forward(backend.namespace_of(grid), grid, **view_params)
    return grid
